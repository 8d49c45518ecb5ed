package openai

// passAccumulator follows a stream on a json route: its events are in no
// format edgecache knows, so each is relayed as it arrives (the answer
// starts with the first event) and nothing is assembled or stored.
type passAccumulator struct{ events int }

func (a *passAccumulator) Add([]byte)            { a.events++ }
func (a *passAccumulator) Done() bool            { return false }
func (a *passAccumulator) Err() error            { return nil }
func (a *passAccumulator) Body() ([]byte, error) { return nil, errNotStorable }
func (a *passAccumulator) HasContent() bool      { return a.events > 0 }
func (a *passAccumulator) Broken() bool          { return false }
func (a *passAccumulator) TotalTokens() int64    { return -1 }
func (a *passAccumulator) DropText()             {}

type notStorable struct{}

func (notStorable) Error() string { return "a json route's stream is never stored" }

var errNotStorable error = notStorable{}

// StreamRequested reports whether a json route's request asks for a
// stream ("stream": true at the top level): its answer, when the upstream
// sends text/event-stream, is relayed event by event and never stored.
func (r *Request) StreamRequested() bool {
	if r.Body.Kind != Object {
		return false
	}
	s, ok := r.Body.Get("stream")
	return ok && s.Kind == Bool && s.Bool()
}
