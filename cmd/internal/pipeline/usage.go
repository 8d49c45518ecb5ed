package pipeline

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/edgecache/edgecache/cache"
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
		model = jsonString(v)
	}
	v := valueAfter(body, `"usage"`, true, '{')
	if v == nil {
		return model, -1, -1
	}
	obj := objectAt(v)
	if obj == nil {
		return model, -1, -1
	}
	if n, ok := intField(obj, `"prompt_tokens"`); ok {
		input = n
	} else if n, ok := intField(obj, `"input_tokens"`); ok {
		input = n
	}
	if n, ok := intField(obj, `"completion_tokens"`); ok {
		output = n
	} else if n, ok := intField(obj, `"output_tokens"`); ok {
		output = n
	}
	return model, input, output
}

// jsonString reads the JSON string v starts with, without a decoder (this
// runs on every hit): the bytes up to the closing quote, or, when the
// string holds an escape, encoding/json's reading of it.
func jsonString(v []byte) string {
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '"':
			return string(v[1:i])
		case '\\':
			var s string
			if end := stringEnd(v); end > 0 && json.Unmarshal(v[:end], &s) == nil {
				return s
			}
			return ""
		}
	}
	return ""
}

// stringEnd is the index just past the JSON string v starts with, or -1.
func stringEnd(v []byte) int {
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// objectAt is the JSON object v starts with (through its closing brace),
// or nil when it does not close.
func objectAt(v []byte) []byte {
	depth := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			end := stringEnd(v[i:])
			if end < 0 {
				return nil
			}
			i += end - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return v[:i+1]
			}
		}
	}
	return nil
}

// intField is the non-negative integer after key and a colon at the top
// level of obj or in a nested object (keys are distinct enough here:
// "input_tokens" never matches "input_tokens_details").
func intField(obj []byte, key string) (int64, bool) {
	for rest := obj; ; {
		i := bytes.Index(rest, []byte(key))
		if i < 0 {
			return 0, false
		}
		rest = rest[i+len(key):]
		j := 0
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t' || rest[j] == '\n' || rest[j] == '\r') {
			j++
		}
		if j >= len(rest) || rest[j] != ':' {
			continue
		}
		j++
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t' || rest[j] == '\n' || rest[j] == '\r') {
			j++
		}
		var n int64
		k := j
		for k < len(rest) && rest[k] >= '0' && rest[k] <= '9' && k-j < 18 {
			n = n*10 + int64(rest[k]-'0')
			k++
		}
		if k == j {
			return 0, false
		}
		return n, true
	}
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
func (p *Pipeline) saved(rt *Route, c caller, e cache.Entry) {
	DeriveUsage(&e)
	u := e.Usage
	if u.Input <= 0 && u.Output <= 0 {
		return
	}
	t := ""
	if c.known {
		t = c.tenant()
	}
	p.m.CacheSaved(rt.Name, t, u.Model, u.Input, u.Output)
}

// entryUsage is cache.Entry.Usage of an answer: answerUsage, read once
// per stored entry. Scanning the body at every hit cost 0.2 µs for a chat
// answer and 0.7–1.2 µs for a Responses one (its usage object sits behind
// more fields), 5 % of that hit.
func entryUsage(body []byte) *cache.Usage {
	model, in, out := answerUsage(body)
	return &cache.Usage{Model: model, Input: in, Output: out}
}

// DeriveUsage sets e.Usage from e.Body when it is not set (an entry read
// from a tier that does not keep it): cache.TieredConfig.Prepare.
func DeriveUsage(e *cache.Entry) {
	if e.Usage == nil {
		e.Usage = entryUsage(e.Body)
	}
}
