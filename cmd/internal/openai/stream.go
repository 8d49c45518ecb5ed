package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Accumulator assembles a streamed chat or legacy completion into the
// non-streamed response it stands for, so one cache entry serves both kinds
// of client. It is used by the goroutine copying the stream; not safe for
// concurrent use.
type Accumulator struct {
	api     API
	meta    Response
	choices []*accChoice
	usage   *Usage
	done    bool // saw data: [DONE]
	broken  error
	resp    *respAcc // the Responses API (responses_stream.go)
	// addFast's buffers, reused from chunk to chunk (chunkscan.go).
	scratch []byte
	fast    []fastChoice
	noFast  bool // tests: decode every chunk with encoding/json
	lean    bool // DropText: the answer's text is not kept
}

type accChoice struct {
	index        int
	role         string
	content      answerText
	refusal      answerText
	text         answerText
	tools        []ToolCall
	toolArgs     []answerText
	finishReason *string
}

// answerText accumulates one part of a choice's answer. A lean one keeps
// only its length and whether any of it is not white space: what Err and
// HasContent read.
type answerText struct {
	b        strings.Builder
	lean     bool
	n        int
	nonBlank bool
}

func (t *answerText) Write(p []byte) {
	if !t.lean {
		t.b.Write(p)
		return
	}
	t.n += len(p)
	t.nonBlank = t.nonBlank || len(bytes.TrimSpace(p)) > 0
}

func (t *answerText) WriteString(s string) {
	if !t.lean {
		t.b.WriteString(s)
		return
	}
	t.n += len(s)
	t.nonBlank = t.nonBlank || strings.TrimSpace(s) != ""
}

// Len is the length of the text received.
func (t *answerText) Len() int {
	if t.lean {
		return t.n
	}
	return t.b.Len()
}

// String is the text ("" when lean).
func (t *answerText) String() string { return t.b.String() }

// blank reports whether the text is empty or only white space.
func (t *answerText) blank() bool {
	if t.lean {
		return !t.nonBlank
	}
	return strings.TrimSpace(t.b.String()) == ""
}

// NewAccumulator starts assembling a stream of api (chat or completions).
func NewAccumulator(api API) *Accumulator {
	if api == APIResponses {
		return &Accumulator{api: api, resp: &respAcc{}}
	}
	return &Accumulator{api: api}
}

// Add consumes one event's data payload.
func (a *Accumulator) Add(data []byte) {
	if a.resp != nil {
		a.resp.add(data)
		return
	}
	if a.broken != nil || len(data) == 0 {
		return
	}
	if bytes.Equal(data, Done) {
		a.done = true
		return
	}
	if a.meta.ID != "" && !a.noFast && a.addFast(data) {
		return // the common chunk, scanned in place
	}
	var chunk Response
	if err := json.Unmarshal(data, &chunk); err != nil {
		a.broken = fmt.Errorf("stream chunk: %w", err)
		return
	}
	if len(chunk.Error) > 0 {
		a.broken = errors.New("stream carried an error event")
		return
	}
	if a.meta.ID == "" {
		a.meta.ID, a.meta.Created, a.meta.Model = chunk.ID, chunk.Created, chunk.Model
	}
	if chunk.SystemFingerprint != nil {
		a.meta.SystemFingerprint = chunk.SystemFingerprint
	}
	if chunk.ServiceTier != nil {
		a.meta.ServiceTier = chunk.ServiceTier
	}
	if chunk.Usage != nil {
		a.usage = chunk.Usage
	}
	for _, c := range chunk.Choices {
		ac := a.choice(c.Index)
		if c.FinishReason != nil && *c.FinishReason != "" {
			ac.finishReason = c.FinishReason
		}
		if c.Text != nil {
			ac.text.WriteString(*c.Text)
		}
		d := c.Delta
		if d == nil {
			continue
		}
		if d.Role != "" {
			ac.role = d.Role
		}
		if d.Content != nil {
			ac.content.WriteString(*d.Content)
		}
		if d.Refusal != nil {
			ac.refusal.WriteString(*d.Refusal)
		}
		for _, tc := range d.ToolCalls {
			i := len(ac.tools)
			if tc.Index != nil {
				i = *tc.Index
			}
			for len(ac.tools) <= i {
				ac.tools = append(ac.tools, ToolCall{})
				ac.toolArgs = append(ac.toolArgs, answerText{lean: a.lean})
			}
			t := &ac.tools[i]
			if tc.ID != "" {
				t.ID = tc.ID
			}
			if tc.Type != "" {
				t.Type = tc.Type
			}
			if tc.Function.Name != "" {
				t.Function.Name += tc.Function.Name
			}
			ac.toolArgs[i].WriteString(tc.Function.Arguments)
		}
	}
}

func (a *Accumulator) choice(index int) *accChoice {
	for _, c := range a.choices {
		if c.index == index {
			return c
		}
	}
	c := &accChoice{index: index}
	c.content.lean, c.refusal.lean, c.text.lean = a.lean, a.lean, a.lean
	a.choices = append(a.choices, c)
	return c
}

// DropText tells the accumulator, before the first Add, that the answer
// will not be stored: it keeps what Done, Err, HasContent and the usage
// need, not the answer's text, so a stream that is only relayed does not
// hold its whole answer until its end (Body then has empty texts). The
// Responses API's accumulator is unchanged: it holds no text while the
// stream runs, only the final response.completed event.
func (a *Accumulator) DropText() { a.lean = a.resp == nil }

// Done reports whether the stream ended with [DONE].
func (a *Accumulator) Done() bool { return a.done || a.resp != nil && a.resp.terminal != "" }

// Err returns why the stream cannot be stored: a malformed chunk, an error
// event, a missing [DONE] or finish reason, or an empty answer. Nil means the
// stream is complete and Body may be cached.
func (a *Accumulator) Err() error {
	if a.resp != nil {
		return a.resp.err()
	}
	switch {
	case a.broken != nil:
		return a.broken
	case !a.done:
		return errors.New("stream ended without [DONE]")
	case len(a.choices) == 0:
		return errors.New("stream had no choices")
	}
	for _, c := range a.choices {
		if c.finishReason == nil {
			return fmt.Errorf("choice %d has no finish reason", c.index)
		}
		if c.text.Len() == 0 && c.content.blank() && len(c.tools) == 0 && c.refusal.Len() == 0 {
			return fmt.Errorf("choice %d is empty", c.index)
		}
	}
	return nil
}

// Body returns the assembled non-streamed response.
func (a *Accumulator) Body() ([]byte, error) {
	if a.resp != nil {
		return a.resp.response, a.resp.err()
	}
	r := a.meta
	r.Usage = a.usage
	cs := slices.Clone(a.choices)
	slices.SortFunc(cs, func(x, y *accChoice) int { return x.index - y.index })
	for _, c := range cs {
		ch := Choice{Index: c.index, FinishReason: c.finishReason}
		if a.api == APICompletions {
			r.Object = "text_completion"
			t := c.text.String()
			ch.Text = &t
		} else {
			r.Object = "chat.completion"
			m := &Message{Role: c.role}
			if m.Role == "" {
				m.Role = "assistant"
			}
			if c.content.Len() > 0 { // tool-call answers have "content": null
				s := c.content.String()
				m.Content = &s
			}
			if c.refusal.Len() > 0 {
				s := c.refusal.String()
				m.Refusal = &s
			}
			for i, t := range c.tools {
				t.Index = nil
				t.Function.Arguments = c.toolArgs[i].String()
				m.ToolCalls = append(m.ToolCalls, t)
			}
			ch.Message = m
		}
		r.Choices = append(r.Choices, ch)
	}
	return json.Marshal(r)
}

// chunk types for replay: deltas omit what they do not carry, like OpenAI's.
type replayDelta struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	Refusal   *string    `json:"refusal,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

type replayChoice struct {
	Index        int             `json:"index"`
	Delta        *replayDelta    `json:"delta,omitempty"`
	Text         *string         `json:"text,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type replayChunk struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	Created           int64          `json:"created"`
	Model             string         `json:"model"`
	SystemFingerprint *string        `json:"system_fingerprint,omitempty"`
	ServiceTier       *string        `json:"service_tier,omitempty"`
	Choices           []replayChoice `json:"choices"`
	Usage             *Usage         `json:"usage,omitempty"`
}

// WriteStream replays a stored non-streamed response as the SSE stream the
// upstream would have sent: a role chunk, the content, a finish chunk per
// choice, a usage chunk when includeUsage is set, and data: [DONE]. flush is
// called after every event.
func WriteStream(w io.Writer, flush func(), api API, body []byte, includeUsage bool) error {
	if api == APIResponses {
		return writeResponsesStream(w, flush, body)
	}
	if api == APIAnthropic {
		return writeAnthropicStream(w, flush, body)
	}
	var r Response
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("replay stored answer: %w", err)
	}
	base := replayChunk{ID: r.ID, Created: r.Created, Model: r.Model,
		SystemFingerprint: r.SystemFingerprint, ServiceTier: r.ServiceTier}
	base.Object = "chat.completion.chunk"
	if api == APICompletions {
		base.Object = "text_completion"
	}
	emit := func(choices []replayChoice, usage *Usage) error {
		c := base
		c.Choices, c.Usage = choices, usage
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		if err := writeEvent(w, b); err != nil {
			return err
		}
		flush()
		return nil
	}
	for _, ch := range r.Choices {
		var parts []replayChoice
		if api == APICompletions {
			t := ""
			if ch.Text != nil {
				t = *ch.Text
			}
			parts = append(parts, replayChoice{Index: ch.Index, Text: &t, Logprobs: ch.Logprobs})
		} else {
			m := ch.Message
			if m == nil {
				m = &Message{}
			}
			role, empty := m.Role, ""
			if role == "" {
				role = "assistant"
			}
			parts = append(parts, replayChoice{Index: ch.Index, Delta: &replayDelta{Role: role, Content: &empty}})
			if m.Content != nil && *m.Content != "" {
				parts = append(parts, replayChoice{Index: ch.Index, Delta: &replayDelta{Content: m.Content}, Logprobs: ch.Logprobs})
			}
			if m.Refusal != nil && *m.Refusal != "" {
				parts = append(parts, replayChoice{Index: ch.Index, Delta: &replayDelta{Refusal: m.Refusal}})
			}
			if len(m.ToolCalls) > 0 {
				tcs := slices.Clone(m.ToolCalls)
				for i := range tcs {
					tcs[i].Index = &i
				}
				parts = append(parts, replayChoice{Index: ch.Index, Delta: &replayDelta{ToolCalls: tcs}})
			}
		}
		for _, p := range parts {
			if err := emit([]replayChoice{p}, nil); err != nil {
				return err
			}
		}
		fin := replayChoice{Index: ch.Index, FinishReason: ch.FinishReason}
		if api == APICompletions {
			empty := ""
			fin.Text = &empty
		} else {
			fin.Delta = &replayDelta{}
		}
		if err := emit([]replayChoice{fin}, nil); err != nil {
			return err
		}
	}
	if includeUsage && r.Usage != nil {
		if err := emit([]replayChoice{}, r.Usage); err != nil {
			return err
		}
	}
	if err := writeEvent(w, Done); err != nil {
		return err
	}
	flush()
	return nil
}

func writeEvent(w io.Writer, data []byte) error {
	buf := make([]byte, 0, len(data)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, data...)
	buf = append(buf, '\n', '\n')
	_, err := w.Write(buf)
	return err
}

// WriteErrorEvent ends a broken stream with an explicit error event, in the
// shape the OpenAI SDKs raise as an error, instead of pretending the answer
// was complete.
func WriteErrorEvent(w io.Writer, e ErrorBody) error {
	if shapeOf(w) == APIAnthropic {
		return writeAnthropicErrorEvent(w, e)
	}
	b, _ := json.Marshal(e) // plain strings: cannot fail
	return writeEvent(w, b)
}

// HasContent reports whether any choice has received text, content, a
// refusal or a tool call yet: the first token of the answer.
func (a *Accumulator) HasContent() bool {
	if a.resp != nil {
		return a.resp.content
	}
	for _, c := range a.choices {
		if c.content.Len() > 0 || c.text.Len() > 0 || c.refusal.Len() > 0 || len(c.tools) > 0 {
			return true
		}
	}
	return false
}

// Broken reports whether the stream carried an error event or a malformed
// chunk.
func (a *Accumulator) Broken() bool { return a.broken != nil || a.resp != nil && a.resp.broken != nil }

// TotalTokens is the usage the stream reported (include_usage), or -1.
func (a *Accumulator) TotalTokens() int64 {
	if a.resp != nil {
		return a.resp.totalTokens()
	}
	if a.usage == nil {
		return -1
	}
	return int64(a.usage.TotalTokens)
}
