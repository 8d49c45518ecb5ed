package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// EventReader reads Server-Sent Events and returns each event's raw bytes,
// blank-line terminator included, so a proxy can forward them unchanged.
type EventReader struct {
	r    *bufio.Reader
	buf  []byte
	data []byte
}

// readerSize is the buffer of an EventReader's bufio.Reader: a line
// longer than this is read in pieces (Next keeps reading it whole), so it
// bounds nothing but is held by every open stream, on top of the
// transport's own 4 KiB read buffer. A chunk of a streamed answer is a few
// hundred bytes; 4 KiB here was 4 % of a stream's memory at 2,000 streams.
const readerSize = 1 << 10

// readers pools the bufio.Readers of finished streams (Release).
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}

// NewEventReader reads events from r. Call Release when done with it.
func NewEventReader(r io.Reader) *EventReader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return &EventReader{r: br}
}

// Release returns the reader's buffer to a pool; er must not be used
// afterwards. Releasing twice is harmless.
func (er *EventReader) Release() {
	if er.r == nil {
		return
	}
	er.r.Reset(nil)
	readers.Put(er.r)
	er.r, er.buf, er.data = nil, nil, nil
}

// maxEventBytes bounds one event so a hostile upstream cannot exhaust memory.
const maxEventBytes = 8 << 20

// ErrEventTooLarge is returned for an event over maxEventBytes.
var ErrEventTooLarge = errors.New("sse: event too large")

// Next returns the next event's raw bytes and its data payload (the "data:"
// lines joined by "\n"); both are valid until the next call. It returns
// io.EOF at a clean end of input between events and io.ErrUnexpectedEOF when
// the input ends inside an event.
func (er *EventReader) Next() (raw, data []byte, err error) {
	er.buf, er.data = er.buf[:0], er.data[:0]
	lineStart, lines, hasData := 0, 0, false
	for {
		chunk, err := er.r.ReadSlice('\n')
		er.buf = append(er.buf, chunk...)
		if len(er.buf) > maxEventBytes {
			return nil, nil, ErrEventTooLarge
		}
		if err == bufio.ErrBufferFull {
			continue // a long line: keep reading it whole
		}
		if err != nil {
			if err == io.EOF && lines == 0 && len(bytes.TrimSpace(er.buf)) == 0 {
				return nil, nil, io.EOF
			}
			if err == io.EOF {
				return nil, nil, io.ErrUnexpectedEOF
			}
			return nil, nil, err
		}
		line := bytes.TrimRight(er.buf[lineStart:], "\r\n")
		lineStart = len(er.buf)
		if len(line) == 0 {
			if lines == 0 { // stray blank line between events
				er.buf, lineStart = er.buf[:0], 0
				continue
			}
			return er.buf, er.data, nil
		}
		lines++
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			d, _ = bytes.CutPrefix(d, []byte(" "))
			if hasData {
				er.data = append(er.data, '\n')
			}
			er.data, hasData = append(er.data, d...), true
		}
	}
}

// IsEventStream reports whether h's Content-Type is text/event-stream,
// parameters and letter case aside. It is asked of every answer, hit or
// not: mime.ParseMediaType cost two allocations each time.
func IsEventStream(h http.Header) bool {
	mt, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// Done is the payload that ends an OpenAI stream.
var Done = []byte("[DONE]")

// Usage is the token accounting of a response.
type Usage struct {
	PromptTokens            int             `json:"prompt_tokens"`
	CompletionTokens        int             `json:"completion_tokens"`
	TotalTokens             int             `json:"total_tokens"`
	PromptTokensDetails     json.RawMessage `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails json.RawMessage `json:"completion_tokens_details,omitempty"`
}

// ToolCall is one tool call in a chat message, or a fragment of one in a
// streamed delta.
type ToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// Message is a chat message in a response, or a delta of one in a stream.
type Message struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content"`
	Refusal   *string    `json:"refusal,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// Choice covers both chat choices (Message or Delta) and legacy completion
// choices (Text).
type Choice struct {
	Index        int             `json:"index"`
	Message      *Message        `json:"message,omitempty"`
	Delta        *Message        `json:"delta,omitempty"`
	Text         *string         `json:"text,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

// Response is a chat.completion, a chat.completion.chunk, a text_completion
// or a chunk of one. Fields edgecache does not know are not kept when a
// stream is assembled, but a non-streamed answer is stored byte for byte.
type Response struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint *string         `json:"system_fingerprint,omitempty"`
	ServiceTier       *string         `json:"service_tier,omitempty"`
	Choices           []Choice        `json:"choices"`
	Usage             *Usage          `json:"usage,omitempty"`
	Error             json.RawMessage `json:"error,omitempty"`
}

// Complete reports whether a non-streamed response body is a whole,
// usable answer worth caching: valid JSON, no error, at least one choice,
// every choice finished, and not empty.
func Complete(api API, body []byte) bool {
	ok, _ := Inspect(api, body)
	return ok
}
