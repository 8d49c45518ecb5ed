package pipeline

import (
	"encoding/json"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// answerUsage reads the model and the token usage an answer reports:
// prompt_tokens/completion_tokens (chat, completions, embeddings) or
// input_tokens/output_tokens (Responses, Messages). -1: not reported.
func answerUsage(body []byte) (model string, input, output int64) {
	var v struct {
		Model string `json:"model"`
		Usage *struct {
			PromptTokens     *int64 `json:"prompt_tokens"`
			CompletionTokens *int64 `json:"completion_tokens"`
			InputTokens      *int64 `json:"input_tokens"`
			OutputTokens     *int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	input, output = -1, -1
	if json.Unmarshal(body, &v) != nil {
		return "", -1, -1
	}
	if u := v.Usage; u != nil {
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
	}
	return v.Model, input, output
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
	p.m.TokenUsage(ur.rt.Name, op, ur.req.Model, model, in, out, d)
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
