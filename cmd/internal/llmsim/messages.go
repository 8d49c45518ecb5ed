package llmsim

// Anthropic's Messages API: POST /v1/messages (JSON and SSE, with the same
// fault knobs as chat) and POST /v1/messages/count_tokens. The answer is
// the one chat gives for the same last user text: "sim:<hash> …".

import (
	"encoding/json"
	"net/http"
	"strconv"
)

type messagesRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string         `json:"role"`
		Content messageContent `json:"content"`
	} `json:"messages"`
	System    json.RawMessage `json:"system"`
	MaxTokens *int            `json:"max_tokens"`
	Stream    bool            `json:"stream"`
}

// writeAnthropicError sends {"type":"error","error":{"type","message"}}.
func writeAnthropicError(w http.ResponseWriter, status int, typ, message string) {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]string{"type": typ, "message": message}})
	writeBody(w, status, append(b, '\n'))
}

func parseMessages(body []byte) (genRequest, messagesRequest, string) {
	var mr messagesRequest
	if err := json.Unmarshal(body, &mr); err != nil {
		return genRequest{}, mr, "invalid JSON body: " + err.Error()
	}
	if mr.Model == "" {
		return genRequest{}, mr, "model: Field required"
	}
	if len(mr.Messages) == 0 {
		return genRequest{}, mr, "messages: at least one message is required"
	}
	req := genRequest{chat: true, model: mr.Model, stream: mr.Stream, n: 1}
	last := -1
	for i, m := range mr.Messages {
		req.promptTokens += countWords(string(m.Content))
		if m.Role == "user" {
			last = i
		}
	}
	if last >= 0 {
		req.text = string(mr.Messages[last].Content)
	}
	if mr.MaxTokens != nil {
		if *mr.MaxTokens < 1 {
			return genRequest{}, mr, "max_tokens: Input should be greater than or equal to 1"
		}
		req.maxWords = *mr.MaxTokens
	}
	return req, mr, ""
}

// serveMessages answers POST /v1/messages; f is the fault that applies, or nil.
func (s *Server) serveMessages(w http.ResponseWriter, r *http.Request, body []byte, cfg *Config, f *fault) {
	req, _, msg := parseMessages(body)
	if msg != "" {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}
	a := newAnswer(req.text, cfg.AnswerTokens, req.maxWords)
	cutAfter := 0
	if f != nil {
		if f.Empty {
			a.words = 0
		}
		cutAfter = f.CutAfter
	}
	if !wait(r.Context().Done(), cfg.TTFT) {
		return
	}
	stop := "end_turn"
	if a.finish == "length" {
		stop = "max_tokens"
	}
	id := "msg_sim_" + string(a.appendHash(nil))
	usage := func(out int) string {
		return `{"input_tokens":` + strconv.Itoa(req.promptTokens) + `,"output_tokens":` + strconv.Itoa(out) + `}`
	}
	if !req.stream {
		b := append([]byte(`{"id":"`+id+`","type":"message","role":"assistant","model":`), appendJSONString(nil, req.model)...)
		b = append(b, `,"content":[`...)
		if a.words > 0 {
			b = append(b, `{"type":"text","text":"`...)
			b = a.appendText(b, 0)
			b = append(b, `"}`...)
		}
		b = append(b, `],"stop_reason":"`+stop+`","stop_sequence":null,"usage":`+usage(a.words)+"}\n"...)
		if cutAfter > 0 {
			writeTruncated(w, b)
		}
		writeBody(w, http.StatusOK, b)
		return
	}
	h := w.Header()
	h["Content-Type"] = contentTypeEvent
	h["Cache-Control"] = cacheControlNo
	w.WriteHeader(http.StatusOK)
	sw := sseWriter{w: w, rc: http.NewResponseController(w)}
	ev := func(name, data string) {
		sw.buf = append(sw.buf, "event: "+name+"\ndata: "+data+"\n\n"...)
	}
	start := `{"type":"message_start","message":{"id":"` + id + `","type":"message","role":"assistant","model":` +
		string(appendJSONString(nil, req.model)) + `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":` + usage(1) + `}}`
	ev("message_start", start)
	if a.words > 0 {
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
	}
	ev("ping", `{"type": "ping"}`)
	if !sw.flush() {
		return
	}
	if !sw.streamWords(r.Context().Done(), a.words, 1, cfg.TokensPerSec, cutAfter, func(_, i int) {
		sw.buf = append(sw.buf, `event: content_block_delta`+"\n"+`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`...)
		sw.buf = a.appendWord(sw.buf, 0, i)
		sw.buf = append(sw.buf, "\"}}\n\n"...)
	}) {
		return
	}
	if a.words > 0 {
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
	}
	ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"`+stop+`","stop_sequence":null},"usage":{"output_tokens":`+strconv.Itoa(a.words)+`}}`)
	ev("message_stop", `{"type":"message_stop"}`)
	sw.flush()
}

// serveCountTokens answers POST /v1/messages/count_tokens: the prompt's
// words stand for its tokens.
func (s *Server) serveCountTokens(w http.ResponseWriter, body []byte) {
	req, _, msg := parseMessages(body)
	if msg != "" {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}
	writeBody(w, http.StatusOK, []byte(`{"input_tokens":`+strconv.Itoa(req.promptTokens)+"}\n"))
}

// anthropicErrorType is the error type Anthropic's API gives status.
func anthropicErrorType(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case 529, http.StatusServiceUnavailable:
		return "overloaded_error"
	}
	return "api_error"
}
