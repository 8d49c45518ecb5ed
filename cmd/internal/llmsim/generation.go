package llmsim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// genRequest is what /v1/chat/completions and /v1/completions have in
// common once decoded.
type genRequest struct {
	chat         bool // chat.completion objects, else text_completion
	model        string
	text         string // hashed: the last user message, or the prompt
	promptTokens int
	stream       bool
	includeUsage bool
	n            int
	maxWords     int // 0: no cap
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string         `json:"role"`
		Content messageContent `json:"content"`
	} `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	N                   *int           `json:"n"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
}

func parseChat(body []byte, deployment string) (genRequest, *apiError) {
	var cr chatRequest
	if err := json.Unmarshal(body, &cr); err != nil {
		return genRequest{}, decodeError(err)
	}
	if cr.Model == "" {
		cr.Model = deployment
	}
	if cr.Model == "" {
		return genRequest{}, badRequest("model", "you must provide a model parameter")
	}
	if len(cr.Messages) == 0 {
		return genRequest{}, badRequest("messages", "'messages' must be a non-empty array")
	}
	req := genRequest{chat: true, model: cr.Model, stream: cr.Stream}
	last := -1
	for i, m := range cr.Messages {
		req.promptTokens += countWords(string(m.Content))
		if m.Role == "user" {
			last = i
		}
	}
	if last >= 0 {
		req.text = string(cr.Messages[last].Content)
	}
	maxTokens := cr.MaxTokens
	if cr.MaxCompletionTokens != nil {
		maxTokens = cr.MaxCompletionTokens
	}
	if err := req.setCommon(cr.StreamOptions, cr.N, maxTokens); err != nil {
		return genRequest{}, err
	}
	return req, nil
}

type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	N             *int            `json:"n"`
	MaxTokens     *int            `json:"max_tokens"`
}

func parseCompletion(body []byte, deployment string) (genRequest, *apiError) {
	var cr completionRequest
	if err := json.Unmarshal(body, &cr); err != nil {
		return genRequest{}, decodeError(err)
	}
	if cr.Model == "" {
		cr.Model = deployment
	}
	if cr.Model == "" {
		return genRequest{}, badRequest("model", "you must provide a model parameter")
	}
	req := genRequest{model: cr.Model, stream: cr.Stream}
	p := bytes.TrimLeft(cr.Prompt, " \t\r\n")
	switch {
	case len(p) == 0 || p[0] == 'n':
		return genRequest{}, badRequest("prompt", "you must provide a prompt parameter")
	case p[0] == '"':
		if err := json.Unmarshal(p, &req.text); err != nil {
			return genRequest{}, badRequest("prompt", "Invalid prompt: "+err.Error())
		}
	case p[0] == '[':
		var prompts []string
		if err := json.Unmarshal(p, &prompts); err != nil {
			return genRequest{}, badRequest("prompt", "Invalid prompt: llmsim accepts a string or an array of strings (token arrays are not supported).")
		}
		if len(prompts) == 0 {
			return genRequest{}, badRequest("prompt", "'prompt' must not be an empty array")
		}
		req.text = prompts[0]
	default:
		return genRequest{}, badRequest("prompt", "Invalid type for 'prompt': expected a string or an array of strings.")
	}
	req.promptTokens = countWords(req.text)
	if err := req.setCommon(cr.StreamOptions, cr.N, cr.MaxTokens); err != nil {
		return genRequest{}, err
	}
	return req, nil
}

// setCommon applies the parameters chat and legacy completions share.
func (req *genRequest) setCommon(so *streamOptions, n, maxTokens *int) *apiError {
	if so != nil {
		if !req.stream {
			return badRequest("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		req.includeUsage = so.IncludeUsage
	}
	req.n = 1
	if n != nil {
		if *n < 1 || *n > maxChoices {
			return badRequest("n", "'n' must be between 1 and 128")
		}
		req.n = *n
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return badRequest("max_tokens", "'max_tokens' must be at least 1")
		}
		req.maxWords = *maxTokens
	}
	return nil
}

// serveGeneration answers a chat or legacy completion request; f is the
// fault that applies to it, or nil.
func (s *Server) serveGeneration(w http.ResponseWriter, r *http.Request, rt route, body []byte, cfg *Config, f *fault) {
	var (
		req  genRequest
		aerr *apiError
	)
	if rt == routeChat {
		req, aerr = parseChat(body, deploymentOf(r.URL.Path))
	} else {
		req, aerr = parseCompletion(body, deploymentOf(r.URL.Path))
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	a := s.answerFor(cfg, req.text, req.maxWords)
	cutAfter := 0
	if f != nil {
		if f.Empty {
			a.words, a.finish = 0, "stop"
		}
		cutAfter = f.CutAfter
	}
	if !wait(r.Context().Done(), cfg.TTFT) {
		return // the client went away
	}
	created := time.Now().Unix()
	if cfg.CacheControl != "" {
		w.Header()["Cache-Control"] = []string{cfg.CacheControl}
	}
	if req.stream {
		streamAnswer(w, r, &req, &a, created, cfg.TokensPerSec, cutAfter)
		return
	}
	bp := getBytes()
	defer putBytes(bp)
	b := appendCompletion((*bp)[:0], &req, &a, created)
	*bp = b
	if cutAfter > 0 {
		writeTruncated(w, b) // does not return: it aborts the handler
	}
	writeBody(w, http.StatusOK, b)
}

// appendID appends the response id, e.g. "chatcmpl-sim-3b1f0c2a9d4e".
func appendID(b []byte, req *genRequest, a *answer) []byte {
	b = append(b, '"')
	if req.chat {
		b = append(b, "chatcmpl-sim-"...)
	} else {
		b = append(b, "cmpl-sim-"...)
	}
	b = a.appendHash(b)
	return append(b, '"')
}

// appendHead appends `{"id":…,"object":…,"created":…,"model":…,"choices":[`,
// the beginning shared by full responses and stream chunks.
func appendHead(b []byte, req *genRequest, a *answer, object string, created int64) []byte {
	b = append(b, `{"id":`...)
	b = appendID(b, req, a)
	b = append(b, `,"object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = appendJSONString(b, req.model)
	return append(b, `,"choices":[`...)
}

// appendCompletion appends a whole non-streaming chat.completion or
// text_completion object.
func appendCompletion(b []byte, req *genRequest, a *answer, created int64) []byte {
	object := "text_completion"
	if req.chat {
		object = "chat.completion"
	}
	b = appendHead(b, req, a, object, created)
	for c := 0; c < req.n; c++ {
		if c > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(c), 10)
		if req.chat {
			b = append(b, `,"message":{"role":"assistant","content":"`...)
			b = a.appendText(b, c)
			b = append(b, `","refusal":null}`...)
		} else {
			b = append(b, `,"text":"`...)
			b = a.appendText(b, c)
			b = append(b, '"')
		}
		b = append(b, `,"logprobs":null,"finish_reason":"`...)
		b = append(b, a.finish...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"usage":`...)
	b = appendUsage(b, req.promptTokens, a.words*req.n)
	return append(b, "}\n"...)
}

// writeTruncated sends the first half of body under a Content-Length for the
// whole of it, then aborts the connection: the client sees a broken body.
func writeTruncated(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body[:len(body)/2])
	_ = http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}
