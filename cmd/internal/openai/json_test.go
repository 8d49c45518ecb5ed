package openai

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func canon(t testing.TB, s string) string {
	t.Helper()
	v, err := ParseJSON([]byte(s))
	if err != nil {
		t.Fatalf("ParseJSON(%q): %v", s, err)
	}
	return string(v.AppendCanonical(nil))
}

func TestCanonicalEquivalent(t *testing.T) {
	tests := []struct{ a, b string }{
		{`{"a":1,"b":2}`, `{"b":2,"a":1}`},
		{`{"a": [1, 2, {"y":1,"x":2}]}`, "{\n  \"a\":[1,2,{\"x\":2,\"y\":1}]\n}"},
		{`{"t":0.7}`, `{"t":0.70}`},
		{`{"t":1}`, `{"t":1.0}`},
		{`{"t":100}`, `{"t":1e2}`},
		{`{"t":0}`, `{"t":-0}`},
		{`{"t":0}`, `{"t":0.0e5}`},
		{`{"s":"A\/é"}`, `{"s":"\u0041/\u00e9"}`},
		{`{"s":"😀"}`, `{"s":"\ud83d\ude00"}`},
		{`{"k":1,"k":2}`, `{"k":2}`}, // last duplicate wins, as in encoding/json
		{` [ ] `, `[]`},
	}
	for _, tt := range tests {
		if a, b := canon(t, tt.a), canon(t, tt.b); a != b {
			t.Errorf("canonical(%s) = %s, canonical(%s) = %s; want equal", tt.a, a, tt.b, b)
		}
	}
}

func TestCanonicalDistinct(t *testing.T) {
	tests := []struct{ a, b string }{
		{`{"s":"a b"}`, `{"s":"a  b"}`}, // whitespace inside strings is content
		{`{"s":"A"}`, `{"s":"a"}`},
		{`{"t":0.7}`, `{"t":0.71}`},
		{`{"a":[1,2]}`, `{"a":[2,1]}`},
		{`{"a":null}`, `{}`},
		{`{"a":"1"}`, `{"a":1}`},
		{`{"a":true}`, `{"a":"true"}`},
		{`{"n":12345678901234567890}`, `{"n":12345678901234567891}`}, // big integers keep every digit
	}
	for _, tt := range tests {
		if a, b := canon(t, tt.a), canon(t, tt.b); a == b {
			t.Errorf("canonical(%s) == canonical(%s) = %s; want different", tt.a, tt.b, a)
		}
	}
}

func TestParseJSONRejects(t *testing.T) {
	bad := []string{
		``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{a:1}`, `'x'`,
		`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":+1}`, `nul`, `tru`, `"abc`,
		`"\x"`, `"\u12"`, "\"a\x01b\"", `{} {}`, `{"a":NaN}`, `{"a":Infinity}`,
		strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2),
	}
	for _, s := range bad {
		if _, err := ParseJSON([]byte(s)); err == nil {
			t.Errorf("ParseJSON(%q) succeeded; want an error", s)
		}
	}
	if _, err := ParseJSON([]byte("{\"a\":\"\xff\"}")); !errors.Is(err, ErrInvalidUTF8) {
		t.Errorf("invalid UTF-8: err = %v, want ErrInvalidUTF8", err)
	}
}

func TestAppendCanonicalExcept(t *testing.T) {
	v, err := ParseJSON([]byte(`{"stream":true,"model":"m","stream_options":{"include_usage":true},"x":{"stream":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := string(v.AppendCanonicalExcept(nil, "stream", "stream_options"))
	if want := `{"model":"m","x":{"stream":1}}`; got != want {
		t.Errorf("got %s, want %s (only top-level members are skipped)", got, want)
	}
}

// FuzzCanonical checks the canonicaliser against encoding/json: both accept
// the same texts, the canonical form means the same thing as the input, and
// canonicalising is idempotent.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.7}`,
		`[1,2.5e3,-0,"\u00e9\n",true,false,null,{}]`, `{"a":{"b":{"c":[[]]}}}`, `"\ud800"`, `1E-7`,
		`{"k":1,"k":{"z":1,"a":2}}`, ` {"x" : "y" } `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseJSON(b)
		if !utf8.Valid(b) {
			if err == nil {
				t.Fatalf("accepted invalid UTF-8 %q", b)
			}
			return
		}
		var se *SyntaxError
		if err != nil && errors.As(err, &se) && strings.Contains(se.Msg, "nesting") {
			return // deliberately stricter than encoding/json
		}
		if valid := json.Valid(b); valid != (err == nil) {
			t.Fatalf("ParseJSON(%q) err = %v, but json.Valid = %v", b, err, valid)
		}
		if err != nil {
			return
		}
		c := v.AppendCanonical(nil)
		v2, err := ParseJSON(c)
		if err != nil {
			t.Fatalf("canonical form %q does not parse: %v", c, err)
		}
		if c2 := v2.AppendCanonical(nil); string(c2) != string(c) {
			t.Fatalf("not idempotent: %q → %q", c, c2)
		}
		var x, y any
		if err := json.Unmarshal(b, &x); err != nil {
			// Valid JSON that encoding/json cannot hold in an any (a number
			// beyond float64, e.g. 2e400 written out): nothing to compare.
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return
			}
			t.Fatalf("json.Unmarshal(input): %v", err)
		}
		if err := json.Unmarshal(c, &y); err != nil {
			t.Fatalf("json.Unmarshal(canonical): %v", err)
		}
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("meaning changed:\n in  %q → %#v\n out %q → %#v", b, x, c, y)
		}
	})
}

func BenchmarkCanonicalKeyMaterial(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one word, please."}],"temperature":0,"stream":false}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var buf []byte
	for b.Loop() {
		r, err := ParseRequest(APIChat, body)
		if err != nil {
			b.Fatal(err)
		}
		buf = r.AppendKeyMaterial(buf[:0])
	}
}

func TestLastUserTextAndContext(t *testing.T) {
	parse := func(s string) *Request {
		t.Helper()
		r, err := ParseRequest(APIChat, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := parse(`{"model":"m","stream":true,"messages":[{"role":"system","content":"S"},{"role":"user","content":"How do I reset my password?"}]}`)
	b := parse(`{"messages":[{"role":"system","content":"S"},{"content":"password reset — how?","role":"user"}],"model":"m"}`)
	c := parse(`{"model":"m","messages":[{"role":"system","content":"T"},{"role":"user","content":"How do I reset my password?"}]}`)
	if txt, ok := a.LastUserText(); !ok || txt != "How do I reset my password?" {
		t.Errorf("LastUserText = %q, %v", txt, ok)
	}
	ctx := func(r *Request) string { return string(r.AppendContextMaterial(nil)) }
	if ctx(a) != ctx(b) {
		t.Errorf("same context, different material:\n%s\n%s", ctx(a), ctx(b))
	}
	if ctx(a) == ctx(c) {
		t.Error("different system prompts share a context")
	}
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`,
		`{"model":"m","messages":[{"role":"user","content":"   "}]}`,
	} {
		if _, ok := parse(s).LastUserText(); ok {
			t.Errorf("%s: semantic matching allowed", s)
		}
	}
	parts := parse(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`)
	if txt, ok := parts.LastUserText(); !ok || txt != "a\nb" {
		t.Errorf("text parts: %q %v", txt, ok)
	}
}
