package openai

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
)

const anthStream = `event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" <world> & you"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}

event: message_stop
data: {"type":"message_stop"}

`

func accumulateAnthropic(t *testing.T, s []byte) StreamAccumulator {
	t.Helper()
	acc := NewStreamAccumulator(APIAnthropic)
	er := NewEventReader(bytes.NewReader(s))
	for {
		_, data, err := er.Next()
		if err != nil {
			break
		}
		acc.Add(data)
	}
	return acc
}

func decodeAnthropic(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

func TestAnthropicStreamRoundTrip(t *testing.T) {
	acc := accumulateAnthropic(t, []byte(anthStream))
	if err := acc.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.TotalTokens() != 52 {
		t.Errorf("tokens %d", acc.TotalTokens())
	}
	body, err := acc.Body()
	if err != nil {
		t.Fatal(err)
	}
	m := decodeAnthropic(t, body)
	content := m["content"].([]any)
	if len(content) != 3 || content[1].(map[string]any)["text"] != "Hello <world> & you" ||
		content[0].(map[string]any)["signature"] != "sig" ||
		content[2].(map[string]any)["input"].(map[string]any)["city"] != "Paris" || m["stop_reason"] != "tool_use" {
		t.Fatalf("assembled %s", body)
	}
	if complete, tokens := Inspect(APIAnthropic, body); !complete || tokens != 52 {
		t.Errorf("Inspect: %v %d", complete, tokens)
	}
	var out bytes.Buffer
	flushes := 0
	if err := WriteStream(&out, func() { flushes++ }, APIAnthropic, body, false); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "event: message_start\ndata: ") || !strings.HasSuffix(out.String(), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Errorf("replay:\n%s", out.String())
	}
	again, err := accumulateAnthropic(t, out.Bytes()).Body()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(decodeAnthropic(t, again), m) {
		t.Errorf("replayed stream assembles to\n%s\nwant\n%s", again, body)
	}
	if flushes < 10 {
		t.Errorf("%d flushes: want one per event", flushes)
	}
}

func TestAnthropicStreamIncomplete(t *testing.T) {
	cut := anthStream[:strings.Index(anthStream, "event: message_delta")]
	if accumulateAnthropic(t, []byte(cut)).Err() == nil {
		t.Error("a stream without message_stop is complete")
	}
	withErr := strings.Replace(anthStream, "event: ping\ndata: {\"type\": \"ping\"}", `event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 1)
	if a := accumulateAnthropic(t, []byte(withErr)); !a.Broken() || a.Err() == nil {
		t.Error("an error event is not broken")
	}
}

func TestAnthropicRequest(t *testing.T) {
	for _, bad := range []string{`{"model":"m"}`, `{"model":"m","messages":[]}`, `{"model":"m","messages":[{"role":"system","content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"top_k":"a"}`, `{"messages":[{"role":"user","content":"x"}]}`} {
		if _, err := ParseRequest(APIAnthropic, []byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	a, err := ParseRequest(APIAnthropic, []byte(`{"model":"m","max_tokens":5,"stream":true,"temperature":0.5,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`))
	if err != nil || !a.Stream || *a.Temperature != 0.5 {
		t.Fatalf("%+v %v", a, err)
	}
	if text, ok := a.LastUserText(); !ok || text != "hi" {
		t.Errorf("LastUserText %q %v", text, ok)
	}
	b, _ := ParseRequest(APIAnthropic, []byte(`{"model":"m","max_tokens":5,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`))
	c, _ := ParseRequest(APIAnthropic, []byte(`{"model":"m","max_tokens":5,"system":"other","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`))
	if kb, kc := b.AppendKeyMaterial(nil), c.AppendKeyMaterial(nil); bytes.Equal(kb, kc) {
		t.Error("another system prompt has the same key")
	}
}

// A lean Messages accumulator (DropText) agrees with a full one on what
// the relay reads, event by event and at the end, and keeps no deltas.
func TestAnthropicDropText(t *testing.T) {
	cut := anthStream[:strings.Index(anthStream, "event: message_delta")]
	withErr := strings.Replace(anthStream, "event: ping\ndata: {\"type\": \"ping\"}", `event: error
data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 1)
	for name, s := range map[string]string{"whole": anthStream, "cut": cut, "error event": withErr} {
		_, datas, err := readAll(t, s)
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Fatal(err)
		}
		full, lean := &AnthropicAccumulator{}, &AnthropicAccumulator{}
		lean.DropText()
		for i, d := range datas {
			full.Add([]byte(d))
			lean.Add([]byte(d))
			if full.HasContent() != lean.HasContent() || full.Done() != lean.Done() || full.Broken() != lean.Broken() {
				t.Fatalf("%s, event %d: full and lean differ", name, i)
			}
		}
		if fe, le := full.Err(), lean.Err(); (fe == nil) != (le == nil) || fe != nil && fe.Error() != le.Error() {
			t.Errorf("%s: Err full %v, lean %v", name, fe, le)
		}
		if full.TotalTokens() != lean.TotalTokens() {
			t.Errorf("%s: tokens full %d, lean %d", name, full.TotalTokens(), lean.TotalTokens())
		}
		for _, b := range lean.blocks {
			if b.text.Cap()+b.json.Cap()+b.thinking.Cap()+b.signature.Cap() != 0 || len(b.citations) != 0 {
				t.Errorf("%s: the lean accumulator kept a delta", name)
			}
		}
		if name == "whole" {
			fb, _ := full.Body()
			lb, err := lean.Body()
			fm, lm := decodeAnthropic(t, fb), decodeAnthropic(t, lb)
			if err != nil || !reflect.DeepEqual(fm["usage"], lm["usage"]) || fm["model"] != lm["model"] {
				t.Errorf("lean Body %s (%v): usage or model differ from %s", lb, err, fb)
			}
		}
	}
}
