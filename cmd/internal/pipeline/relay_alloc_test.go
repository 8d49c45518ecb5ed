package pipeline

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// relayStream is a chat stream as llmsim sends it: a role chunk, n content
// chunks (one word each, some with escapes), a finish chunk and [DONE].
func relayStream(n int) []byte {
	var b bytes.Buffer
	head := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"sim-1","choices":[{"index":0,`
	b.WriteString(head + `"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	for i := range n {
		word := fmt.Sprintf("word%d ", i)
		if i%10 == 9 {
			word = `line\n\"q\" `
		}
		b.WriteString(head + `"delta":{"content":"` + word + `"},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	}
	b.WriteString(head + `"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// relayEvents runs the relay's per-event path over stream: read an event,
// copy it for the call, feed the accumulator, append it to the call, and
// read it back as a client does. It returns the events relayed.
func relayEvents(tb testing.TB, stream []byte) int {
	er := openai.NewEventReader(bytes.NewReader(stream))
	defer er.Release()
	acc := openai.NewStreamAccumulator(openai.APIChat)
	c := newCall("", true, func() {})
	var arena eventArena
	n, next := 0, 0
	for {
		raw, data, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		ev := arena.copy(raw)
		acc.Add(data)
		c.append(ev)
		v := c.read(next)
		next += len(v.events)
		n++
	}
	if acc.Err() != nil || !acc.HasContent() {
		tb.Fatalf("stream not complete: %v", acc.Err())
	}
	return n
}

// maxRelayAllocsPerEvent bounds the relay's allocations per event.
const maxRelayAllocsPerEvent = 1

// TestRelayAllocsPerEvent bounds the allocations of the relay's per-event
// path (a deterministic count, not a timing), setup and the assembled
// answer's growth included.
func TestRelayAllocsPerEvent(t *testing.T) {
	const n = 200
	stream := relayStream(n)
	events := relayEvents(t, stream)
	allocs := testing.AllocsPerRun(20, func() { relayEvents(t, stream) })
	per := allocs / float64(events)
	t.Logf("%.0f allocations for %d events: %.3f per event", allocs, events, per)
	if per > maxRelayAllocsPerEvent {
		t.Errorf("%.3f allocations per relayed event, want ≤ %d", per, maxRelayAllocsPerEvent)
	}
}

func BenchmarkRelayEvents(b *testing.B) {
	stream := relayStream(200)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		relayEvents(b, stream)
	}
}
