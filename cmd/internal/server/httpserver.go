package server

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// Limits bound how long a client may hold a connection and how much header
// it may send (server.* in the configuration). Zero fields mean no limit.
type Limits struct {
	// ReadHeaderTimeout bounds the request line and headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the whole request, headers and body, from its
	// first byte (http.Server.ReadTimeout). net/http clears the deadline
	// once the handler has read the body, so it never cuts an answer.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer, from its first byte; an
	// answer that streams gets it afresh for each write (see answerWriter).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers (431 above).
	MaxHeaderBytes int
}

// NewHTTPServer returns the server of one listener: h within l, behind
// protect.
//
// http.Server.WriteTimeout is left unset on purpose: it runs from the end
// of the request's headers, so it would count the wait for the model (up
// to upstream.timeout) against the answer and cut every stream longer
// than it. protect sets write deadlines per answer instead, as
// ReverseProxy users do with http.ResponseController.
func NewHTTPServer(h http.Handler, l Limits, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           protect(h, l.WriteTimeout, log),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// protect is the connection hygiene around every handler of a listener:
//
//   - Write deadlines per answer (see answerWriter); net/http clears the
//     connection's deadline after each answer, so none outlives its own.
//   - Never an empty 200. A handler that returns without writing makes
//     net/http send "200 OK, Content-Length: 0". When the client has gone
//     (the request's context is canceled: it hung up, or half-closed its
//     side after sending, which net/http reports the same way) the answer
//     is aborted instead — the connection is closed with nothing written,
//     as ReverseProxy does with http.ErrAbortHandler. Otherwise it is a
//     bug, logged and answered 500.
//   - Request smuggling: RFC 9112 §6.1 requires closing the connection
//     after a request that carried both Content-Length and
//     Transfer-Encoding, and after an HTTP/1.0 request with
//     Transfer-Encoding. net/http (Go 1.26) frames such a request by
//     Transfer-Encoding, drops Content-Length (or, for HTTP/1.0,
//     Transfer-Encoding) from the header and keeps the connection
//     (golang/go#80942), so the handler cannot tell; protect closes the
//     connection after every request framed by Transfer-Encoding and
//     every HTTP/1.0 request. LLM clients send Content-Length; a chunked
//     upload only loses keep-alive.
func protect(next http.Handler, writeTimeout time.Duration, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		aw := &answerWriter{ResponseWriter: w, rc: *http.NewResponseController(w), timeout: writeTimeout,
			close: len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1)}
		next.ServeHTTP(aw, r)
		if aw.wrote {
			return
		}
		if r.Context().Err() != nil {
			panic(http.ErrAbortHandler)
		}
		log.ErrorContext(r.Context(), "handler wrote no answer", "method", r.Method, "path", r.URL.Path)
		openai.WriteError(aw, http.StatusInternalServerError, 0,
			openai.NewError(openai.TypeServer, "internal_error", "", "The edge produced no answer; it has been logged. Retry the request."))
	})
}

// answerWriter sets the write deadlines of one answer and records whether
// anything was written.
//
// An answer that is not streamed gets the timeout once, when its header is
// written: all of it must reach the client by then. An answer that streams
// — an event stream, anything the handler flushes, or what
// markStreaming names — gets the timeout afresh before each write and
// flush, so a stream lives as long as its client keeps reading, and a
// client that stops reading is cut after the timeout.
type answerWriter struct {
	http.ResponseWriter
	rc      http.ResponseController // a value: one allocation fewer per request
	timeout time.Duration
	close   bool // answer with Connection: close

	wrote     bool
	streaming bool
	extended  time.Time // when the deadline was last set
}

func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *answerWriter) WriteHeader(code int) {
	if w.wrote || code < 200 {
		// Informational answers (103 Early Hints) go as they are; a second
		// header is net/http's to complain about.
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wrote = true
	if w.close {
		w.Header().Set("Connection", "close")
	}
	if openai.IsEventStream(w.Header()) {
		w.streaming = true
	}
	w.extend(true)
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	w.extend(false)
	return w.ResponseWriter.Write(b)
}

// FlushError makes the answer a stream and flushes it
// (http.ResponseController.Flush).
func (w *answerWriter) FlushError() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	w.streaming = true
	w.extend(false)
	return w.rc.Flush()
}

// Flush is http.Flusher, for wrappers that look for it directly.
func (w *answerWriter) Flush() { _ = w.FlushError() }

// extend sets the write deadline: at the header always, later only for a
// stream. Setting it costs a timer update, so a stream's deadline is moved
// only once a sixteenth of the timeout has passed: each write has at least
// 15/16 of it.
func (w *answerWriter) extend(header bool) {
	if w.timeout <= 0 || !header && !w.streaming {
		return
	}
	now := time.Now()
	if !header && now.Sub(w.extended) < w.timeout/16 {
		return
	}
	w.extended = now
	_ = w.rc.SetWriteDeadline(now.Add(w.timeout))
}

// markStreaming makes the answer being written to w a stream for its write
// deadlines (answerWriter), for a handler whose answer is long by design
// (an execution trace) without flushing.
func markStreaming(w http.ResponseWriter) {
	for {
		switch v := w.(type) {
		case *answerWriter:
			v.streaming = true
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return
		}
	}
}
