package llmsim

import (
	"net/http"
	"strconv"
	"time"
)

// streamAnswer sends a as server-sent events, the way OpenAI streams:
// a role chunk per choice (chat only), one chunk per word and choice, a
// finish chunk per choice, the usage chunk when asked for, then [DONE].
// Words after the first are paced at tokensPerSec. With cutAfter > 0 the
// connection is aborted after that many content chunks, before any
// finish_reason or [DONE].
func streamAnswer(w http.ResponseWriter, r *http.Request, req *genRequest, a *answer, created int64, tokensPerSec float64, cutAfter int) {
	h := w.Header()
	h["Content-Type"] = contentTypeEvent
	if _, set := h["Cache-Control"]; !set { // Config.CacheControl
		h["Cache-Control"] = cacheControlNo
	}
	w.WriteHeader(http.StatusOK)

	sw := sseWriter{w: w, rc: http.NewResponseController(w)}
	object := "text_completion"
	if req.chat {
		object = "chat.completion.chunk"
	}
	sw.head = append([]byte("data: "), appendHead(nil, req, a, object, created)...)
	sw.tail = "]}\n\n"
	if req.includeUsage {
		sw.tail = `],"usage":null}` + "\n\n"
	}
	bp := getBytes()
	defer putBytes(bp)
	sw.buf = (*bp)[:0]
	defer func() { *bp = sw.buf }()

	if req.chat {
		for c := 0; c < req.n; c++ {
			sw.chunk(c, `"delta":{"role":"assistant","content":""}`, "", "null")
		}
		if !sw.flush() {
			return
		}
	}

	if !sw.streamWords(r.Context().Done(), a.words, req.n, tokensPerSec, cutAfter, func(c, i int) {
		sw.buf = append(sw.buf, sw.head...)
		sw.buf = append(sw.buf, `{"index":`...)
		sw.buf = strconv.AppendInt(sw.buf, int64(c), 10)
		if req.chat {
			sw.buf = append(sw.buf, `,"delta":{"content":"`...)
			sw.buf = a.appendWord(sw.buf, c, i)
			sw.buf = append(sw.buf, `"},"logprobs":null,"finish_reason":null}`...)
		} else {
			sw.buf = append(sw.buf, `,"text":"`...)
			sw.buf = a.appendWord(sw.buf, c, i)
			sw.buf = append(sw.buf, `","logprobs":null,"finish_reason":null}`...)
		}
		sw.buf = append(sw.buf, sw.tail...)
	}) {
		return
	}

	finish := `"` + a.finish + `"`
	for c := 0; c < req.n; c++ {
		if req.chat {
			sw.chunk(c, `"delta":{}`, "", finish)
		} else {
			sw.chunk(c, "", `"text":""`, finish)
		}
	}
	if req.includeUsage {
		// The usage chunk has no choices; it starts like the others and
		// ends differently.
		sw.buf = append(sw.buf, sw.head...)
		sw.buf = append(sw.buf, `],"usage":`...)
		sw.buf = appendUsage(sw.buf, req.promptTokens, a.words*req.n)
		sw.buf = append(sw.buf, "}\n\n"...)
	}
	sw.buf = append(sw.buf, "data: [DONE]\n\n"...)
	sw.flush()
}

// sseWriter accumulates events in buf and writes them out on flush.
type sseWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	head []byte // "data: " and the chunk object up to `"choices":[`
	tail string // closes the choices array (and adds "usage":null) and the event
	buf  []byte
}

// chunk appends an event with one choice. Chat chunks pass before (the
// delta), text completion chunks pass after (the text); finish is a JSON
// value.
func (sw *sseWriter) chunk(choice int, before, after, finish string) {
	sw.buf = append(sw.buf, sw.head...)
	sw.buf = append(sw.buf, `{"index":`...)
	sw.buf = strconv.AppendInt(sw.buf, int64(choice), 10)
	if before != "" {
		sw.buf = append(sw.buf, ',')
		sw.buf = append(sw.buf, before...)
	}
	if after != "" {
		sw.buf = append(sw.buf, ',')
		sw.buf = append(sw.buf, after...)
	}
	sw.buf = append(sw.buf, `,"logprobs":null,"finish_reason":`...)
	sw.buf = append(sw.buf, finish...)
	sw.buf = append(sw.buf, '}')
	sw.buf = append(sw.buf, sw.tail...)
}

// flush writes the pending events and pushes them to the client; false
// means the client is gone.
func (sw *sseWriter) flush() bool {
	_, err := sw.w.Write(sw.buf)
	sw.buf = sw.buf[:0]
	if err != nil {
		return false
	}
	return sw.rc.Flush() == nil
}

// streamWords sends an answer's words paced at tokensPerSec from now, for
// every generator (chat and text completions, Messages, Responses): word i
// waits until i/tokensPerSec, then emit appends its event for each of the
// choices and they are flushed. With cutAfter > 0 the connection breaks
// once that many word events were sent (before the next one, or after the
// last word). False: the client went away.
func (sw *sseWriter) streamWords(done <-chan struct{}, words, choices int, tokensPerSec float64, cutAfter int, emit func(choice, i int)) bool {
	var interval time.Duration
	if tokensPerSec > 0 {
		interval = time.Duration(float64(time.Second) / tokensPerSec)
	}
	p := pacer{done: done, start: time.Now()}
	defer p.stop()
	sent := 0
	for i := 0; i < words; i++ {
		if i > 0 && interval > 0 && !p.until(time.Duration(i)*interval) {
			return false
		}
		for c := 0; c < choices; c++ {
			if cutAfter > 0 && sent >= cutAfter {
				sw.abort()
			}
			emit(c, i)
			sent++
		}
		if !sw.flush() {
			return false
		}
	}
	if cutAfter > 0 {
		sw.abort()
	}
	return true
}

// abort sends what is pending and breaks the connection, so the client sees
// a stream that ends without finish_reason or [DONE].
func (sw *sseWriter) abort() {
	sw.flush()
	panic(http.ErrAbortHandler)
}

// pacer waits until offsets from start, reusing one timer.
type pacer struct {
	done  <-chan struct{}
	start time.Time
	t     *time.Timer
}

// until waits until start+offset; false means done was closed first.
func (p *pacer) until(offset time.Duration) bool {
	d := time.Until(p.start.Add(offset))
	if d <= 0 {
		return true
	}
	if p.t == nil {
		p.t = time.NewTimer(d)
	} else {
		p.t.Reset(d)
	}
	select {
	case <-p.t.C:
		return true
	case <-p.done:
		return false
	}
}

func (p *pacer) stop() {
	if p.t != nil {
		p.t.Stop()
	}
}
