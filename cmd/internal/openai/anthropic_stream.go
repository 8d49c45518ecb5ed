package openai

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// StreamAccumulator assembles a streamed answer into the non-streamed
// answer it stands for (see Accumulator).
type StreamAccumulator interface {
	Add(data []byte)
	Done() bool
	Err() error
	Body() ([]byte, error)
	HasContent() bool
	Broken() bool
	TotalTokens() int64
	// DropText, called before the first Add, says the answer will not be
	// stored: an accumulator may then keep less than Body needs (chat,
	// completions and Messages keep no text; Responses holds none while
	// the stream runs anyway; a JSON route's keeps nothing).
	DropText()
}

// NewStreamAccumulator returns the accumulator for api's streams.
func NewStreamAccumulator(api API) StreamAccumulator {
	switch api {
	case APIAnthropic:
		return &AnthropicAccumulator{}
	case APIJSON:
		return &passAccumulator{}
	}
	return NewAccumulator(api)
}

// AnthropicAccumulator assembles a Messages stream (message_start,
// content_block_start/delta/stop, message_delta, message_stop; ping
// ignored) into the message it stands for.
type AnthropicAccumulator struct {
	msg     map[string]json.RawMessage // message_start's message
	usage   map[string]json.RawMessage
	blocks  []*anthBlock
	stop    json.RawMessage // stop_reason
	stopSeq json.RawMessage
	content bool
	done    bool
	broken  error
	lean    bool // DropText: deltas are checked, not kept
}

type anthBlock struct {
	start     map[string]json.RawMessage
	text      strings.Builder
	json      strings.Builder
	thinking  strings.Builder
	signature strings.Builder
	citations []json.RawMessage
	deltas    bool
}

type anthEvent struct {
	Type         string                     `json:"type"`
	Index        int                        `json:"index"`
	Message      map[string]json.RawMessage `json:"message"`
	ContentBlock map[string]json.RawMessage `json:"content_block"`
	Delta        struct {
		Type         string          `json:"type"`
		Text         string          `json:"text"`
		PartialJSON  string          `json:"partial_json"`
		Thinking     string          `json:"thinking"`
		Signature    string          `json:"signature"`
		Citation     json.RawMessage `json:"citation"`
		StopReason   json.RawMessage `json:"stop_reason"`
		StopSequence json.RawMessage `json:"stop_sequence"`
	} `json:"delta"`
	Usage map[string]json.RawMessage `json:"usage"`
}

// DropText, before the first Add, keeps each block's start and drops its
// deltas (text, tool input, thinking, signature, citations): a stream that
// is only relayed does not hold its answer until its end. Err, HasContent
// and the usage read none of them; Body then has empty blocks.
func (a *AnthropicAccumulator) DropText() { a.lean = true }

// Add consumes one event's data payload.
func (a *AnthropicAccumulator) Add(data []byte) {
	if a.broken != nil || len(data) == 0 {
		return
	}
	var ev anthEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		a.broken = fmt.Errorf("stream event: %w", err)
		return
	}
	switch ev.Type {
	case "message_start":
		a.msg = ev.Message
		if a.msg == nil {
			a.broken = errors.New("message_start without a message")
			return
		}
		a.usage = map[string]json.RawMessage{}
		if u, ok := a.msg["usage"]; ok {
			_ = json.Unmarshal(u, &a.usage)
		}
	case "content_block_start":
		if ev.Index != len(a.blocks) || ev.ContentBlock == nil {
			a.broken = fmt.Errorf("content block %d out of order", ev.Index)
			return
		}
		a.blocks = append(a.blocks, &anthBlock{start: ev.ContentBlock})
		var typ string
		_ = json.Unmarshal(ev.ContentBlock["type"], &typ)
		if typ != "text" && typ != "thinking" {
			a.content = true // tool_use and the like are content from the start
		}
	case "content_block_delta":
		if ev.Index < 0 || ev.Index >= len(a.blocks) {
			a.broken = fmt.Errorf("delta for unknown content block %d", ev.Index)
			return
		}
		b := a.blocks[ev.Index]
		b.deltas = true
		a.content = true
		d := ev.Delta
		switch d.Type {
		case "text_delta", "input_json_delta", "thinking_delta", "signature_delta", "citations_delta":
			if !a.lean {
				b.add(d.Type, d.Text, d.PartialJSON, d.Thinking, d.Signature, d.Citation)
			}
		default:
			a.broken = fmt.Errorf("unknown delta type %q", d.Type)
		}
	case "message_delta":
		if len(ev.Delta.StopReason) > 0 {
			a.stop = ev.Delta.StopReason
		}
		if len(ev.Delta.StopSequence) > 0 {
			a.stopSeq = ev.Delta.StopSequence
		}
		for k, v := range ev.Usage {
			if a.usage == nil {
				a.usage = map[string]json.RawMessage{}
			}
			if string(v) != "null" {
				a.usage[k] = v
			}
		}
	case "message_stop":
		a.done = true
	case "error":
		a.broken = errors.New("stream carried an error event")
	case "content_block_stop", "ping":
	}
}

// Done reports whether the stream ended with message_stop.
func (a *AnthropicAccumulator) Done() bool { return a.done }

// HasContent reports whether the answer has started.
func (a *AnthropicAccumulator) HasContent() bool { return a.content }

// Broken reports an error event or a malformed event.
func (a *AnthropicAccumulator) Broken() bool { return a.broken != nil }

// TotalTokens is input plus output tokens, or -1.
func (a *AnthropicAccumulator) TotalTokens() int64 {
	if a.usage == nil {
		return -1
	}
	var n, total int64
	ok := false
	for _, k := range []string{"input_tokens", "output_tokens"} {
		if v, has := a.usage[k]; has && json.Unmarshal(v, &n) == nil {
			total += n
			ok = true
		}
	}
	if !ok {
		return -1
	}
	return total
}

// add keeps one delta of the block.
func (b *anthBlock) add(typ, text, partialJSON, thinking, signature string, citation json.RawMessage) {
	switch typ {
	case "text_delta":
		b.text.WriteString(text)
	case "input_json_delta":
		b.json.WriteString(partialJSON)
	case "thinking_delta":
		b.thinking.WriteString(thinking)
	case "signature_delta":
		b.signature.WriteString(signature)
	case "citations_delta":
		b.citations = append(b.citations, citation)
	}
}

// Err returns why the stream cannot be stored, or nil.
func (a *AnthropicAccumulator) Err() error {
	switch {
	case a.broken != nil:
		return a.broken
	case !a.done:
		return errors.New("stream ended without message_stop")
	case a.msg == nil:
		return errors.New("stream had no message_start")
	case len(a.stop) == 0 || string(a.stop) == "null":
		return errors.New("stream had no stop_reason")
	case len(a.blocks) == 0:
		return errors.New("stream had no content")
	}
	return nil
}

// Body returns the assembled message.
func (a *AnthropicAccumulator) Body() ([]byte, error) {
	m := make(map[string]json.RawMessage, len(a.msg)+2)
	for k, v := range a.msg {
		m[k] = v
	}
	blocks := make([]json.RawMessage, 0, len(a.blocks))
	for _, b := range a.blocks {
		out := make(map[string]json.RawMessage, len(b.start))
		for k, v := range b.start {
			out[k] = v
		}
		var typ string
		_ = json.Unmarshal(b.start["type"], &typ)
		switch typ {
		case "text":
			out["text"], _ = json.Marshal(b.text.String())
			if len(b.citations) > 0 {
				out["citations"], _ = json.Marshal(b.citations)
			}
		case "thinking":
			out["thinking"], _ = json.Marshal(b.thinking.String())
			out["signature"], _ = json.Marshal(b.signature.String())
		default:
			if b.json.Len() > 0 {
				if !json.Valid([]byte(b.json.String())) {
					return nil, errors.New("tool input is not valid JSON")
				}
				out["input"] = json.RawMessage(b.json.String())
			}
		}
		bb, err := json.Marshal(out)
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, bb)
	}
	var err error
	if m["content"], err = json.Marshal(blocks); err != nil {
		return nil, err
	}
	m["stop_reason"] = a.stop
	if len(a.stopSeq) > 0 {
		m["stop_sequence"] = a.stopSeq
	}
	if a.usage != nil {
		if m["usage"], err = json.Marshal(a.usage); err != nil {
			return nil, err
		}
	}
	return json.Marshal(m)
}

// writeAnthropicStream replays a stored message as the Messages stream the
// upstream would have sent: message_start (no content, no stop reason),
// per block a content_block_start, its deltas and content_block_stop, then
// message_delta (stop reason, output tokens) and message_stop. flush is
// called after every event.
func writeAnthropicStream(w io.Writer, flush func(), body []byte) error {
	var m map[string]json.RawMessage
	var blocks []map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("replay stored answer: %w", err)
	}
	if err := json.Unmarshal(m["content"], &blocks); err != nil {
		return fmt.Errorf("replay stored answer: %w", err)
	}
	emit := func(name string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := writeNamedEvent(w, name, b); err != nil {
			return err
		}
		flush()
		return nil
	}
	start := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		start[k] = v
	}
	start["content"] = json.RawMessage("[]")
	start["stop_reason"] = json.RawMessage("null")
	start["stop_sequence"] = json.RawMessage("null")
	var usage map[string]json.RawMessage
	_ = json.Unmarshal(m["usage"], &usage)
	if err := emit("message_start", map[string]any{"type": "message_start", "message": start}); err != nil {
		return err
	}
	type delta struct {
		Type        string          `json:"type"`
		Text        *string         `json:"text,omitempty"`
		PartialJSON *string         `json:"partial_json,omitempty"`
		Thinking    *string         `json:"thinking,omitempty"`
		Signature   *string         `json:"signature,omitempty"`
		Citation    json.RawMessage `json:"citation,omitempty"`
	}
	for i, b := range blocks {
		var typ string
		_ = json.Unmarshal(b["type"], &typ)
		first := make(map[string]json.RawMessage, len(b))
		for k, v := range b {
			first[k] = v
		}
		var deltas []delta
		str := func(k string) string { var s string; _ = json.Unmarshal(b[k], &s); return s }
		switch typ {
		case "text":
			first["text"] = json.RawMessage(`""`)
			var cites []json.RawMessage
			if _, ok := b["citations"]; ok && json.Unmarshal(b["citations"], &cites) == nil && len(cites) > 0 {
				first["citations"] = json.RawMessage("[]")
				for _, c := range cites {
					deltas = append(deltas, delta{Type: "citations_delta", Citation: c})
				}
			}
			t := str("text")
			deltas = append([]delta{{Type: "text_delta", Text: &t}}, deltas...)
		case "thinking":
			first["thinking"], first["signature"] = json.RawMessage(`""`), json.RawMessage(`""`)
			t, s := str("thinking"), str("signature")
			deltas = append(deltas, delta{Type: "thinking_delta", Thinking: &t})
			if s != "" {
				deltas = append(deltas, delta{Type: "signature_delta", Signature: &s})
			}
		case "tool_use", "server_tool_use":
			first["input"] = json.RawMessage("{}")
			in := string(b["input"])
			if in != "" && in != "{}" {
				deltas = append(deltas, delta{Type: "input_json_delta", PartialJSON: &in})
			}
		}
		if err := emit("content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": first}); err != nil {
			return err
		}
		for _, d := range deltas {
			if err := emit("content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": d}); err != nil {
				return err
			}
		}
		if err := emit("content_block_stop", map[string]any{"type": "content_block_stop", "index": i}); err != nil {
			return err
		}
	}
	md := map[string]any{"stop_reason": m["stop_reason"], "stop_sequence": json.RawMessage("null")}
	if s, ok := m["stop_sequence"]; ok {
		md["stop_sequence"] = s
	}
	out := map[string]json.RawMessage{"output_tokens": json.RawMessage("0")}
	if v, ok := usage["output_tokens"]; ok {
		out["output_tokens"] = v
	}
	if err := emit("message_delta", map[string]any{"type": "message_delta", "delta": md, "usage": out}); err != nil {
		return err
	}
	return emit("message_stop", map[string]string{"type": "message_stop"})
}
