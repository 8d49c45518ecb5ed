package openai

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

const storedResponse = `{"id":"resp_1","object":"response","created_at":1,"status":"completed","error":null,"model":"m",` +
	`"output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello <b> & world","annotations":[]}]}],` +
	`"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}`

func TestResponsesReplayRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteStream(&buf, func() {}, APIResponses, []byte(storedResponse), false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	order := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	at := 0
	for _, ev := range order {
		i := strings.Index(out[at:], "event: "+ev+"\n")
		if i < 0 {
			t.Fatalf("event %s missing or out of order in\n%s", ev, out)
		}
		at += i
	}
	acc := NewAccumulator(APIResponses)
	er := NewEventReader(&buf)
	for {
		_, data, err := er.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		acc.Add(data)
		if !acc.Done() && strings.Contains(string(data), `"response.output_text.delta"`) && !acc.HasContent() {
			t.Fatal("a delta is content")
		}
	}
	if err := acc.Err(); err != nil {
		t.Fatal(err)
	}
	body, _ := acc.Body()
	if string(body) != storedResponse {
		t.Fatalf("assembled %s", body)
	}
	if acc.TotalTokens() != 7 {
		t.Fatalf("tokens %d", acc.TotalTokens())
	}
	if ok, n := Inspect(APIResponses, []byte(storedResponse)); !ok || n != 7 {
		t.Fatalf("Inspect = %v %d", ok, n)
	}
	if ok, _ := Inspect(APIResponses, []byte(strings.Replace(storedResponse, `"status":"completed","error"`, `"status":"incomplete","error"`, 1))); ok {
		t.Fatal("an incomplete response is not stored")
	}
}

func TestResponsesStreamErrorIsBroken(t *testing.T) {
	acc := NewAccumulator(APIResponses)
	acc.Add([]byte(`{"type":"response.created","sequence_number":0,"response":{}}`))
	acc.Add([]byte(`{"type":"error","code":"x","message":"boom","param":null,"sequence_number":1}`))
	if !acc.Broken() || acc.HasContent() || acc.Err() == nil {
		t.Fatal("an error event breaks the stream")
	}
	acc = NewAccumulator(APIResponses)
	acc.Add([]byte(`{"type":"response.output_text.delta","delta":"hi","sequence_number":3}`))
	if !acc.HasContent() || acc.Err() == nil {
		t.Fatal("a stream without response.completed is not storable")
	}
}

func TestResponsesParse(t *testing.T) {
	for _, bad := range []string{`{"model":"m"}`, `{"model":"m","input":3}`, `{"model":"m","input":[1]}`, `{"model":"m","input":"x","instructions":1}`, `{"input":"x"}`, `{"model":"m","input":"x","max_output_tokens":"a"}`} {
		if _, err := ParseRequest(APIResponses, []byte(bad)); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
	r, err := ParseRequest(APIResponses, []byte(`{"model":"m","instructions":"be brief","input":[{"role":"system","content":"s"},{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],"stream":true}`))
	if err != nil || !r.Stream {
		t.Fatal(err)
	}
	if txt, ok := r.LastUserText(); !ok || txt != "hi" {
		t.Fatalf("LastUserText = %q %v", txt, ok)
	}
	s1, _ := ParseRequest(APIResponses, []byte(`{"model":"m","input":"one"}`))
	s2, _ := ParseRequest(APIResponses, []byte(`{"model":"m","input":[{"role":"user","content":"two"}]}`))
	if string(s1.AppendContextMaterial(nil)) != string(s2.AppendContextMaterial(nil)) {
		t.Fatal("a string input is one user message's context")
	}
	s3, _ := ParseRequest(APIResponses, []byte(`{"model":"m","instructions":"x","input":"one"}`))
	if string(s1.AppendContextMaterial(nil)) == string(s3.AppendContextMaterial(nil)) {
		t.Fatal("instructions are context")
	}
	for body, want := range map[string]string{
		`{"model":"m","input":"x"}`:                                  "",
		`{"model":"m","previous_response_id":"resp_1"}`:              "previous_response_id",
		`{"model":"m","input":"x","conversation":"conv_1"}`:          "conversation",
		`{"model":"m","input":"x","background":true}`:                "background",
		`{"model":"m","input":[{"type":"item_reference","id":"a"}]}`: "item_reference",
	} {
		r, err := ParseRequest(APIResponses, []byte(body))
		if err != nil {
			t.Fatal(body, err)
		}
		if got := r.ServerState(); got != want {
			t.Errorf("%s: ServerState = %q, want %q", body, got, want)
		}
	}
}

func TestDiscloseResponse(t *testing.T) {
	b, err := DiscloseResponse([]byte(storedResponse), "[note] ")
	if err != nil || !strings.Contains(string(b), `"text":"[note] Hello <b> & world"`) {
		t.Fatalf("%s %v", b, err)
	}
	if ok, _ := Inspect(APIResponses, SyntheticResponse("m", "t", "hello", time.Unix(0, 0))); !ok {
		t.Fatal("a synthetic response is complete")
	}
}
