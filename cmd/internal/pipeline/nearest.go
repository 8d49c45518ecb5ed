package pipeline

// The semantic-nearest rung: while the upstream fails, the stored answer
// whose prompt the verifier scores at or above the route's degraded floor.
// Scored under the threshold a normal lookup would use, it answers another
// question, so the body itself says so, in the prompt's language: SDK
// users never see the X-Edgecache-Degraded header. The notice is written
// into the stored chat.completion (or text_completion) before it is
// served, so the JSON answer and the stream replayed from it
// (openai.WriteStream) carry the same words. An answer that cannot carry
// the notice is not served on this rung (DEGRADATION.md, "The
// semantic-nearest rung is honest").

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

// serveNearest serves the semantic-nearest rung and reports whether it
// did; false means nothing was written and the next rung applies.
func (p *Pipeline) serveNearest(w http.ResponseWriter, r *http.Request, pd *pending, f *Failure) bool {
	rt, req := pd.rt, pd.req
	if pd.q == nil || req == nil || rt.DegradedFloor <= 0 {
		return false
	}
	hit, ok := p.semanticLookupAt(r.Context(), rt, pd.q, rt.DegradedFloor)
	if !ok {
		return false
	}
	e := hit.entry // a copy: the cached entry and its body stay as stored
	disclosed := hit.score < p.sem.threshold(rt, r)
	if disclosed {
		if strings.TrimSpace(hit.text) == "" { // an index that kept no text: the notice could not name it
			return false
		}
		body, err := discloseNearest(req.API, e.Body, p.nearestNotice(pd.q.text, hit.text))
		if err != nil {
			p.log.DebugContext(r.Context(), "semantic-nearest answer not served", "route", rt.Name, "err", err)
			return false
		}
		e.Body = body
	}
	matched := questionHash(hit.text)
	h := w.Header()
	h.Set("X-Edgecache-Degraded", "semantic-nearest")
	h.Set("X-Edgecache-Degraded-Reason", f.Reason)
	h.Set("X-Edgecache-Matched-Question-Hash", matched)
	p.writeHit(w, r, req, e, "semantic", hit.cosine)
	p.journal(r, pd, "semantic-nearest", f, e.Status, 0, func(d *Degraded) {
		d.Similarity, d.CacheAge = hit.cosine, e.Age(p.cfg.Now())
		d.Score, d.MatchedHash, d.Disclosed = hit.score, matched, disclosed
	})
	return true
}

// questionHash identifies a stored prompt in headers and the journal
// without repeating it: 16 bytes of its SHA-256, in hex.
func questionHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:16])
}

// maxQuotedRunes bounds the matched question quoted in a notice: enough to
// recognise it, short enough that the answer stays the body's bulk.
const maxQuotedRunes = 120

// nearestNotice is the disclosure put before a nearest answer, in the
// query's language (zh or en; other languages get English).
func (p *Pipeline) nearestNotice(query, matched string) string {
	lang := ""
	if p.cfg.Templates != nil {
		lang = p.cfg.Templates.Lang(query)
	} else {
		lang = hanLang(query)
	}
	q := quoteQuestion(matched)
	if lang == "zh" {
		return "服务繁忙，以下是对一个相近的早先问题“" + q + "”的回答，可能与您的问题不完全一致。\n\n"
	}
	return "The service is busy right now, so this is an earlier answer to a similar question: “" + q +
		"”. It may not fit your question exactly.\n\n"
}

// hanLang is the language guess without Templates: "zh" when Chinese
// characters are at least as many as the words in other scripts (as
// templates.DetectLang counts), else "en".
func hanLang(text string) string {
	han, words, inWord := 0, 0, false
	for _, r := range text {
		switch {
		case unicode.Is(unicode.Han, r):
			han++
			inWord = false
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if !inWord {
				words++
			}
			inWord = true
		default:
			inWord = false
		}
	}
	if han > 0 && han >= words {
		return "zh"
	}
	return "en"
}

// quoteQuestion is the matched prompt on one line (runs of white space,
// newlines included, become one space), cut at maxQuotedRunes on a rune
// boundary with an ellipsis.
func quoteQuestion(text string) string {
	s := strings.Join(strings.Fields(text), " ")
	if utf8.RuneCountInString(s) <= maxQuotedRunes {
		return s
	}
	n := 0
	for i := range s {
		if n == maxQuotedRunes {
			return strings.TrimRightFunc(s[:i], unicode.IsSpace) + "…"
		}
		n++
	}
	return s
}

// errNotDisclosable: the stored answer has no text a notice can precede
// (not a chat or text completion, or a choice without text content, such
// as tool calls only).
var errNotDisclosable = errors.New("stored answer cannot carry the semantic-nearest notice")

// discloseNearest returns a copy of a stored answer with notice before the
// text of every choice: choices[i].message.content for chat,
// choices[i].text for completions. Other fields are kept as stored; body
// is not modified.
func discloseNearest(api openai.API, body []byte, notice string) ([]byte, error) {
	if api == openai.APIResponses {
		b, err := openai.DiscloseResponse(body, notice)
		if err != nil {
			return nil, errNotDisclosable
		}
		return b, nil
	}
	if api == openai.APIAnthropic {
		return discloseAnthropic(body, notice)
	}
	if api != openai.APIChat && api != openai.APICompletions {
		return nil, errNotDisclosable
	}
	var resp map[string]json.RawMessage
	var choices []map[string]json.RawMessage
	if json.Unmarshal(body, &resp) != nil || json.Unmarshal(resp["choices"], &choices) != nil || len(choices) == 0 {
		return nil, errNotDisclosable
	}
	for _, ch := range choices {
		if ch == nil {
			return nil, errNotDisclosable
		}
		if api == openai.APICompletions {
			t, err := prefixText(ch["text"], notice)
			if err != nil {
				return nil, err
			}
			ch["text"] = t
			continue
		}
		var msg map[string]json.RawMessage
		if json.Unmarshal(ch["message"], &msg) != nil || msg == nil {
			return nil, errNotDisclosable
		}
		c, err := prefixText(msg["content"], notice)
		if err != nil {
			return nil, err
		}
		msg["content"] = c
		if ch["message"], err = marshalJSON(msg); err != nil {
			return nil, err
		}
	}
	var err error
	if resp["choices"], err = marshalJSON(choices); err != nil {
		return nil, err
	}
	return marshalJSON(resp)
}

// prefixText puts notice before a JSON string that is not empty.
func prefixText(raw json.RawMessage, notice string) (json.RawMessage, error) {
	var s *string
	if json.Unmarshal(raw, &s) != nil || s == nil || *s == "" {
		return nil, errNotDisclosable
	}
	return marshalJSON(notice + *s)
}

// marshalJSON is json.Marshal without HTML escaping, so that an answer's
// <, > and & stay as the upstream wrote them.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
