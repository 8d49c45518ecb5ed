package openai

import "testing"

func TestParseRequestModelOptional(t *testing.T) {
	body := []byte(`{"messages":[{"role":"user","content":"hi"}]}`)
	if _, err := ParseRequest(APIChat, body); err == nil {
		t.Error("ParseRequest without a model: no error")
	}
	r, err := ParseRequestFor(APIChat, body, true)
	if err != nil || r.Model != "" {
		t.Errorf("ParseRequestFor(modelOptional) = %+v, %v", r, err)
	}
	if _, err := ParseRequestFor(APIChat, []byte(`{"model":7,"messages":[{"role":"user","content":"hi"}]}`), true); err == nil {
		t.Error("a model of the wrong type passed with modelOptional")
	}
}
