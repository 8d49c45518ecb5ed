package pipeline

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// answerUsage reads the model and the token usage an answer reports:
// prompt_tokens/completion_tokens (chat, completions, embeddings) or
// input_tokens/output_tokens (Responses, Messages). -1: not reported.
//
// It runs on every cache hit, so it does not parse the whole answer: it
// decodes the object after the last "usage" key and the string after the
// first "model" key. A key's quotes are never escaped, and the same word
// inside a string value is (\"usage\"), or is not followed by a colon.
func answerUsage(body []byte) (model string, input, output int64) {
	input, output = -1, -1
	if v := valueAfter(body, `"model"`, false, '"'); v != nil {
		_ = json.NewDecoder(bytes.NewReader(v)).Decode(&model)
	}
	v := valueAfter(body, `"usage"`, true, '{')
	if v == nil {
		return model, -1, -1
	}
	var u struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
	}
	if json.NewDecoder(bytes.NewReader(v)).Decode(&u) != nil {
		return model, -1, -1
	}
	switch {
	case u.PromptTokens != nil:
		input = *u.PromptTokens
	case u.InputTokens != nil:
		input = *u.InputTokens
	}
	switch {
	case u.CompletionTokens != nil:
		output = *u.CompletionTokens
	case u.OutputTokens != nil:
		output = *u.OutputTokens
	}
	return model, input, output
}

// valueAfter finds key (the first or the last occurrence) followed by a
// colon and a value starting with open, and returns the body from that
// value on; nil if there is none.
func valueAfter(body []byte, key string, last bool, open byte) []byte {
	for rest := body; ; {
		var i int
		if last {
			i = bytes.LastIndex(rest, []byte(key))
		} else {
			i = bytes.Index(rest, []byte(key))
		}
		if i < 0 {
			return nil
		}
		j := skipSpace(body, len(body)-len(rest)+i+len(key))
		if j < len(body) && body[j] == ':' {
			if j = skipSpace(body, j+1); j < len(body) && body[j] == open {
				return body[j:]
			}
		}
		if last {
			rest = rest[:i]
		} else {
			rest = rest[i+len(key):]
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// genAIOperation is the gen_ai.operation.name of an API ("" → not a model
// call).
func genAIOperation(api openai.API) string {
	switch api {
	case openai.APIChat, openai.APIResponses:
		return "chat"
	case openai.APICompletions:
		return "text_completion"
	case openai.APIEmbeddings:
		return "embeddings"
	}
	return ""
}

// tokenUsage records a complete upstream answer's usage and duration.
func (p *Pipeline) tokenUsage(ur *upstreamRequest, answer []byte, d time.Duration) {
	if ur.req == nil {
		return
	}
	op := genAIOperation(ur.req.API)
	if op == "" {
		return
	}
	model, in, out := answerUsage(answer)
	p.m.TokenUsage(ur.rt.Name, op, ur.req.Model, model, in, out, d, "")
}

// callFailed records a failed model call's duration with why it failed.
func (p *Pipeline) callFailed(ur *upstreamRequest, reason string, d time.Duration) {
	if ur.req == nil || reason == "" {
		return
	}
	if op := genAIOperation(ur.req.API); op != "" {
		p.m.TokenUsage(ur.rt.Name, op, ur.req.Model, "", -1, -1, d, reason)
	}
}

// saved records what a cache hit spared the model: the usage stored with
// the answer, for the caller's tenant.
func (p *Pipeline) saved(rt *Route, c caller, body []byte) {
	model, in, out := answerUsage(body)
	if in <= 0 && out <= 0 {
		return
	}
	t := ""
	if c.known {
		t = c.tenant()
	}
	p.m.CacheSaved(rt.Name, t, model, in, out)
}
