package openai

// Streams of the Responses API: named SSE events ("event: response.…")
// whose data carries a "type" and a "sequence_number". A stream is relayed
// as it comes; the response its response.completed event carries is what
// is stored, and a stored response is replayed as the full event sequence
// the official SDKs assemble it from.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// respAcc follows a Responses stream for the Accumulator.
type respAcc struct {
	content  bool   // a delta arrived: the first token
	terminal string // response.completed, response.incomplete or response.failed
	response []byte // the completed event's response
	broken   error
}

func (a *respAcc) add(data []byte) {
	if a.broken != nil || len(data) == 0 || string(data) == string(Done) {
		return
	}
	var ev struct {
		Type     string          `json:"type"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		a.broken = fmt.Errorf("stream event: %w", err)
		return
	}
	switch ev.Type {
	case "error":
		a.broken = errors.New("stream carried an error event")
	case "response.failed":
		a.terminal = ev.Type
		a.broken = errors.New("stream ended with response.failed")
	case "response.completed", "response.incomplete":
		a.terminal = ev.Type
		a.response = append([]byte(nil), ev.Response...)
	default:
		if strings.HasSuffix(ev.Type, ".delta") {
			a.content = true
		}
	}
}

func (a *respAcc) err() error {
	switch {
	case a.broken != nil:
		return a.broken
	case a.terminal == "":
		return errors.New("stream ended without response.completed")
	case a.terminal != "response.completed":
		return fmt.Errorf("stream ended with %s", a.terminal)
	}
	if ok, _ := inspectResponses(a.response); !ok {
		return errors.New("completed response is empty or unfinished")
	}
	return nil
}

func (a *respAcc) totalTokens() int64 {
	if a.response == nil {
		return -1
	}
	_, n := inspectResponses(a.response)
	return n
}

// responsesEvents writes one named event per call, numbering them.
type responsesEvents struct {
	w     io.Writer
	flush func()
	seq   int
	err   error
}

func (e *responsesEvents) emit(typ string, fields map[string]any) {
	if e.err != nil {
		return
	}
	fields["type"] = typ
	fields["sequence_number"] = e.seq
	e.seq++
	b, err := marshalNoEscape(fields)
	if err != nil {
		e.err = err
		return
	}
	buf := make([]byte, 0, len(b)+len(typ)+16)
	buf = append(buf, "event: "...)
	buf = append(buf, typ...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, b...)
	buf = append(buf, '\n', '\n')
	if _, e.err = e.w.Write(buf); e.err == nil {
		e.flush()
	}
}

// writeResponsesStream replays a stored response as the stream the
// upstream would have sent: response.created and response.in_progress
// (the response without output), per output item output_item.added, its
// content parts (content_part.added, output_text.delta, output_text.done,
// content_part.done) or function call arguments, output_item.done, and
// response.completed with the stored response.
func writeResponsesStream(w io.Writer, flush func(), body []byte) error {
	var resp map[string]json.RawMessage
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("replay stored response: %w", err)
	}
	var output []map[string]json.RawMessage
	if err := json.Unmarshal(resp["output"], &output); err != nil {
		return fmt.Errorf("replay stored response output: %w", err)
	}
	e := &responsesEvents{w: w, flush: flush}
	start := make(map[string]json.RawMessage, len(resp))
	for k, v := range resp {
		start[k] = v
	}
	start["status"] = json.RawMessage(`"in_progress"`)
	start["output"] = json.RawMessage(`[]`)
	start["usage"] = json.RawMessage(`null`)
	e.emit("response.created", map[string]any{"response": start})
	e.emit("response.in_progress", map[string]any{"response": start})
	for i, item := range output {
		var typ, id string
		_ = json.Unmarshal(item["type"], &typ)
		_ = json.Unmarshal(item["id"], &id)
		added := make(map[string]json.RawMessage, len(item))
		for k, v := range item {
			added[k] = v
		}
		if _, ok := item["status"]; ok {
			added["status"] = json.RawMessage(`"in_progress"`)
		}
		switch typ {
		case "message":
			added["content"] = json.RawMessage(`[]`)
		case "function_call", "custom_tool_call":
			if _, ok := item["arguments"]; ok {
				added["arguments"] = json.RawMessage(`""`)
			}
			if _, ok := item["input"]; ok && typ == "custom_tool_call" {
				added["input"] = json.RawMessage(`""`)
			}
		}
		e.emit("response.output_item.added", map[string]any{"output_index": i, "item": added})
		switch typ {
		case "message":
			var parts []map[string]json.RawMessage
			_ = json.Unmarshal(item["content"], &parts)
			for j, part := range parts {
				replayPart(e, id, i, j, part)
			}
		case "function_call":
			var args string
			_ = json.Unmarshal(item["arguments"], &args)
			if args != "" {
				e.emit("response.function_call_arguments.delta", map[string]any{"item_id": id, "output_index": i, "delta": args})
			}
			e.emit("response.function_call_arguments.done", map[string]any{"item_id": id, "output_index": i, "arguments": args})
		}
		e.emit("response.output_item.done", map[string]any{"output_index": i, "item": item})
	}
	e.emit("response.completed", map[string]any{"response": json.RawMessage(body)})
	return e.err
}

// replayPart replays one content part of a message: added empty, its text
// as a delta, done.
func replayPart(e *responsesEvents, itemID string, i, j int, part map[string]json.RawMessage) {
	var typ string
	_ = json.Unmarshal(part["type"], &typ)
	at := func(m map[string]any) map[string]any {
		m["item_id"], m["output_index"], m["content_index"] = itemID, i, j
		return m
	}
	empty := make(map[string]json.RawMessage, len(part))
	for k, v := range part {
		empty[k] = v
	}
	switch typ {
	case "output_text":
		empty["text"] = json.RawMessage(`""`)
		empty["annotations"] = json.RawMessage(`[]`)
	case "refusal":
		empty["refusal"] = json.RawMessage(`""`)
	}
	e.emit("response.content_part.added", at(map[string]any{"part": empty}))
	switch typ {
	case "output_text":
		var text string
		_ = json.Unmarshal(part["text"], &text)
		if text != "" {
			e.emit("response.output_text.delta", at(map[string]any{"delta": text, "logprobs": []any{}}))
		}
		var anns []json.RawMessage
		_ = json.Unmarshal(part["annotations"], &anns)
		for k, a := range anns {
			e.emit("response.output_text.annotation.added", at(map[string]any{"annotation_index": k, "annotation": a}))
		}
		e.emit("response.output_text.done", at(map[string]any{"text": text, "logprobs": []any{}}))
	case "refusal":
		var text string
		_ = json.Unmarshal(part["refusal"], &text)
		if text != "" {
			e.emit("response.refusal.delta", at(map[string]any{"delta": text}))
		}
		e.emit("response.refusal.done", at(map[string]any{"refusal": text}))
	}
	e.emit("response.content_part.done", at(map[string]any{"part": part}))
}

// WriteResponsesErrorEvent ends a Responses stream that broke after its
// first event with the API's error event (the OpenAI SDKs raise it);
// seq is the sequence number the next event would have had.
func WriteResponsesErrorEvent(w io.Writer, seq int, code, msg string) error {
	b, _ := marshalNoEscape(map[string]any{"type": "error", "code": code, "message": msg, "param": nil,
		"sequence_number": seq})
	_, err := io.WriteString(w, "event: error\ndata: "+string(b)+"\n\n")
	return err
}
