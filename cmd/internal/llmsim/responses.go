package llmsim

// POST /v1/responses, the OpenAI Responses API, JSON or streamed (named
// events response.created … response.completed), with the same knobs and
// faults as chat: the answer is "sim:<hash of the last user text>" and
// filler words. A response made with "store": true can be read back
// with GET /v1/responses/{id} and deleted with DELETE.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type responsesRequest struct {
	Model           string          `json:"model"`
	Input           json.RawMessage `json:"input"`
	Instructions    *string         `json:"instructions"`
	Stream          bool            `json:"stream"`
	Store           *bool           `json:"store"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
}

type respInputItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// parseResponses decodes a Responses request: the hashed text is the input
// when it is a string, else the text of the last user message.
func parseResponses(body []byte) (responsesRequest, string, *apiError) {
	var rr responsesRequest
	if err := json.Unmarshal(body, &rr); err != nil {
		return rr, "", decodeError(err)
	}
	if rr.Model == "" {
		return rr, "", badRequest("model", "Missing required parameter: 'model'.")
	}
	in := bytes.TrimLeft(rr.Input, " \t\r\n")
	if len(in) == 0 || in[0] == 'n' {
		return rr, "", badRequest("input", "Missing required parameter: 'input'.")
	}
	if rr.MaxOutputTokens != nil && *rr.MaxOutputTokens < 1 {
		return rr, "", badRequest("max_output_tokens", "'max_output_tokens' must be at least 1")
	}
	if in[0] == '"' {
		var s string
		if err := json.Unmarshal(in, &s); err != nil {
			return rr, "", badRequest("input", "Invalid input: "+err.Error())
		}
		return rr, s, nil
	}
	var items []respInputItem
	if err := json.Unmarshal(in, &items); err != nil {
		return rr, "", badRequest("input", "Invalid type for 'input': expected a string or an array of input items.")
	}
	text := ""
	for _, it := range items {
		if it.Role != "user" || (it.Type != "" && it.Type != "message") {
			continue
		}
		c := bytes.TrimLeft(it.Content, " \t\r\n")
		if len(c) > 0 && c[0] == '"' {
			_ = json.Unmarshal(c, &text)
			continue
		}
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(c, &parts); err != nil {
			return rr, "", badRequest("input", "Invalid content: "+err.Error())
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Type == "input_text" || p.Type == "text" {
				b.WriteString(p.Text)
			}
		}
		text = b.String()
	}
	return rr, text, nil
}

// respIDs are the ids of a simulated response and its message.
func respIDs(a *answer) (resp, msg string) {
	h := string(a.appendHash(nil))
	return "resp_sim_" + h, "msg_sim_" + h
}

// responseObject builds the response: status completed, or incomplete
// when max_output_tokens cut the answer.
func responseObject(rr *responsesRequest, a *answer, text string, created int64, status string, promptTokens int) map[string]any {
	rid, mid := respIDs(a)
	o := map[string]any{
		"id": rid, "object": "response", "created_at": created, "status": status, "error": nil,
		"incomplete_details": nil, "instructions": rr.Instructions, "model": rr.Model,
		"output": []any{}, "parallel_tool_calls": true, "tool_choice": "auto", "tools": []any{},
		"text": map[string]any{"format": map[string]any{"type": "text"}}, "store": rr.Store != nil && *rr.Store,
		"usage": nil,
	}
	if status == "in_progress" {
		return o
	}
	if a.finish == "length" {
		o["status"] = "incomplete"
		o["incomplete_details"] = map[string]any{"reason": "max_output_tokens"}
	}
	o["output"] = []any{messageItem(mid, text, "completed")}
	o["usage"] = map[string]any{"input_tokens": promptTokens, "output_tokens": a.words, "total_tokens": promptTokens + a.words,
		"input_tokens_details": map[string]any{"cached_tokens": 0}, "output_tokens_details": map[string]any{"reasoning_tokens": 0}}
	return o
}

func messageItem(id, text, status string) map[string]any {
	content := []any{}
	if status == "completed" {
		content = []any{textPart(text)}
	}
	return map[string]any{"id": id, "type": "message", "status": status, "role": "assistant", "content": content}
}

func textPart(text string) map[string]any {
	return map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": []any{}}
}

// serveResponses answers POST /v1/responses; f is the fault that applies,
// or nil.
func (s *Server) serveResponses(w http.ResponseWriter, r *http.Request, body []byte, cfg *Config, f *fault) {
	rr, text, aerr := parseResponses(body)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	maxWords := 0
	if rr.MaxOutputTokens != nil {
		maxWords = *rr.MaxOutputTokens
	}
	a := newAnswer(text, cfg.AnswerTokens, maxWords)
	cutAfter := 0
	if f != nil {
		if f.Empty {
			a.words, a.finish = 0, "stop"
		}
		cutAfter = f.CutAfter
	}
	if !wait(r.Context().Done(), cfg.TTFT) {
		return
	}
	created := time.Now().Unix()
	prompt := countWords(text)
	if rr.Instructions != nil {
		prompt += countWords(*rr.Instructions)
	}
	full := string(a.appendText(nil, 0))
	done := responseObject(&rr, &a, full, created, "completed", prompt)
	b, _ := json.Marshal(done)
	if rr.Store != nil && *rr.Store { // only when asked: a load test must not fill memory
		s.stored.Store(done["id"], b)
	}
	if !rr.Stream {
		b = append(b, '\n')
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
	seq := 0
	ev := func(typ string, m map[string]any) {
		m["type"], m["sequence_number"] = typ, seq
		seq++
		d, _ := json.Marshal(m)
		sw.buf = append(sw.buf, "event: "...)
		sw.buf = append(sw.buf, typ...)
		sw.buf = append(sw.buf, "\ndata: "...)
		sw.buf = append(sw.buf, d...)
		sw.buf = append(sw.buf, "\n\n"...)
	}
	_, mid := respIDs(&a)
	start := responseObject(&rr, &a, "", created, "in_progress", prompt)
	ev("response.created", map[string]any{"response": start})
	ev("response.in_progress", map[string]any{"response": start})
	ev("response.output_item.added", map[string]any{"output_index": 0, "item": messageItem(mid, "", "in_progress")})
	at := func(m map[string]any) map[string]any {
		m["item_id"], m["output_index"], m["content_index"] = mid, 0, 0
		return m
	}
	ev("response.content_part.added", at(map[string]any{"part": textPart("")}))
	if !sw.flush() {
		return
	}
	if !sw.streamWords(r.Context().Done(), a.words, 1, cfg.TokensPerSec, cutAfter, func(_, i int) {
		ev("response.output_text.delta", at(map[string]any{"delta": string(a.appendWord(nil, 0, i)), "logprobs": []any{}}))
	}) {
		return
	}
	ev("response.output_text.done", at(map[string]any{"text": full, "logprobs": []any{}}))
	ev("response.content_part.done", at(map[string]any{"part": textPart(full)}))
	ev("response.output_item.done", map[string]any{"output_index": 0, "item": messageItem(mid, full, "completed")})
	final := "response.completed"
	if done["status"] == "incomplete" {
		final = "response.incomplete"
	}
	ev(final, map[string]any{"response": done})
	sw.flush()
}

// serveStoredResponse answers GET and DELETE /v1/responses/{id} (and
// POST /v1/responses/{id}/cancel, which finds nothing to cancel).
func (s *Server) serveStoredResponse(w http.ResponseWriter, r *http.Request) {
	id, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/responses/"), "/")
	v, ok := s.stored.Load(id)
	if !ok {
		writeError(w, http.StatusNotFound, "No response found with id '"+id+"'.", "")
		return
	}
	switch {
	case rest == "" && r.Method == http.MethodGet:
		writeBody(w, http.StatusOK, append(append([]byte(nil), v.([]byte)...), '\n'))
	case rest == "" && r.Method == http.MethodDelete:
		s.stored.Delete(id)
		writeBody(w, http.StatusOK, []byte(`{"id":`+strconv.Quote(id)+`,"object":"response","deleted":true}`+"\n"))
	default:
		writeError(w, http.StatusBadRequest, "llmsim: "+r.Method+" "+r.URL.Path+" is not simulated", "")
	}
}
