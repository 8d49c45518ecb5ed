package app

// The official Anthropic SDKs, unmodified but for their base URL, get the
// same answers through edgecache (api: anthropic, the default /v1/messages
// route) on a miss and on the following hit, streamed and not. The Go SDK
// (anthropic-sdk-go) runs in-process; the Node SDK (@anthropic-ai/sdk)
// runs as testdata/sdk-node/anthropic.mjs under node.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

const (
	pathMessages    = "/v1/messages"
	anthropicModel  = "claude-sonnet-4-5"
	anthropicAPIKey = "sk-ant-edgecache-sdk-test"
)

func newAnthropicClient(baseURL, key string) anthropic.Client {
	return anthropic.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func anthropicParams(model, system, prompt string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: 256,
		System:    []anthropic.TextBlockParam{{Text: system}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	}
}

func messageText(m *anthropic.Message) string {
	var b strings.Builder
	for _, c := range m.Content {
		if c.Type == "text" {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

// anthropicOnce makes a non-streamed request.
func anthropicOnce(t *testing.T, ctx context.Context, c anthropic.Client, what string, p anthropic.MessageNewParams, opts ...option.RequestOption) (string, *http.Response) {
	t.Helper()
	var resp *http.Response
	m, err := c.Messages.New(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	if err != nil {
		t.Fatalf("%s: Messages.New: %v", what, err)
	}
	if m.StopReason == "" {
		t.Errorf("%s: no stop_reason: %s", what, m.RawJSON())
	}
	return messageText(m), resp
}

// anthropicStream makes a streamed request and assembles it with the SDK's
// Message.Accumulate; it returns the text and how many events arrived.
func anthropicStream(t *testing.T, ctx context.Context, c anthropic.Client, what string, p anthropic.MessageNewParams) (string, int, *http.Response) {
	t.Helper()
	var resp *http.Response
	s := c.Messages.NewStreaming(ctx, p, option.WithResponseInto(&resp))
	defer s.Close()
	var m anthropic.Message
	n := 0
	for s.Next() {
		n++
		if err := m.Accumulate(s.Current()); err != nil {
			t.Fatalf("%s: Accumulate event %d: %v", what, n, err)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("%s: stream: %v", what, err)
	}
	if m.StopReason == "" {
		t.Errorf("%s: the assembled message has no stop_reason", what)
	}
	return messageText(&m), n, resp
}

func newAnthropicEnv(t *testing.T) (*sdkEnv, anthropic.Client) {
	t.Helper()
	e := newSDKEnv(t)
	return e, newAnthropicClient(e.data, anthropicAPIKey)
}

// TestGoSDKAnthropic: every delivery combination of a miss and the hit
// after it gives the same text; another key, system prompt or model misses.
func TestGoSDKAnthropic(t *testing.T) {
	e, c := newAnthropicEnv(t)
	ctx := e.ctx
	calls := int64(0)
	for _, combo := range []struct{ missStream, hitStream bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
		what := "miss stream=" + strconv.FormatBool(combo.missStream) + ", hit stream=" + strconv.FormatBool(combo.hitStream)
		prompt := uniquePrompt(t, what)
		p := anthropicParams(anthropicModel, "You are terse.", prompt)
		var missText, hitText string
		var missResp, hitResp *http.Response
		if combo.missStream {
			var n int
			missText, n, missResp = anthropicStream(t, ctx, c, what+" (miss)", p)
			if n < sdkAnswerWords { // relayed word by word
				t.Errorf("%s: %d events on a relayed stream, want at least %d", what, n, sdkAnswerWords)
			}
			wantMiss(t, what, missResp, false)
		} else {
			missText, missResp = anthropicOnce(t, ctx, c, what+" (miss)", p)
			wantMiss(t, what, missResp, true)
		}
		calls++
		checkAnswerText(t, what+" (miss)", missText, prompt)
		if combo.hitStream {
			hitText, _, hitResp = anthropicStream(t, ctx, c, what+" (hit)", p)
		} else {
			hitText, hitResp = anthropicOnce(t, ctx, c, what+" (hit)", p)
		}
		wantHit(t, what, hitResp)
		if hitText != missText {
			t.Errorf("%s: hit text %q differs from the miss's %q", what, hitText, missText)
		}
		e.wantUpstreamCalls(t, pathMessages, calls, what)
	}

	prompt := uniquePrompt(t, "variants")
	base := anthropicParams(anthropicModel, "You are terse.", prompt)
	anthropicOnce(t, ctx, c, "base", base)
	_, resp := anthropicOnce(t, ctx, c, "base again", base)
	wantHit(t, "base again", resp)
	other := newAnthropicClient(e.data, "sk-ant-another-key")
	_, resp = anthropicOnce(t, ctx, other, "another key", base)
	wantMiss(t, "another key", resp, true)
	_, resp = anthropicOnce(t, ctx, c, "another system prompt", anthropicParams(anthropicModel, "You are verbose.", prompt))
	wantMiss(t, "another system prompt", resp, true)
	_, resp = anthropicOnce(t, ctx, c, "another model", anthropicParams("claude-haiku-4-5", "You are terse.", prompt))
	wantMiss(t, "another model", resp, true)
	_, resp = anthropicOnce(t, ctx, c, "another anthropic-version", base, option.WithHeader("anthropic-version", "2024-01-01"))
	wantMiss(t, "another anthropic-version", resp, true)
	e.wantUpstreamCalls(t, pathMessages, calls+5, "the variants")
}

// TestAnthropicErrors: bad input is a 4xx in Anthropic's shape, and an
// upstream 503 storm answers in that shape with a true status and
// retry-after.
func TestAnthropicErrors(t *testing.T) {
	e, c := newAnthropicEnv(t)
	post := func(body string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, e.data+pathMessages, strings.NewReader(body))
		req.Header.Set("x-api-key", anthropicAPIKey)
		req.Header.Set("content-type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("body %q: %v", b, err)
		}
		return resp, m
	}
	for _, body := range []string{`{"model":"m","max_tokens":5}`, `{"model":"m","messages":[{"role":"system","content":"x"}]}`, `not json`, `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`} {
		resp, m := post(body)
		inner, _ := m["error"].(map[string]any)
		if resp.StatusCode != http.StatusBadRequest || m["type"] != "error" || inner["type"] != "invalid_request_error" || inner["message"] == "" {
			t.Errorf("%s: %d %v, want 400 in Anthropic's error shape", body, resp.StatusCode, m)
		}
	}

	e.sim.Server.SetFault(llmsim.Fault{Status: http.StatusServiceUnavailable, RetryAfter: 7, Paths: []string{pathMessages}})
	defer e.sim.Server.ClearFault()
	_, err := c.Messages.New(e.ctx, anthropicParams(anthropicModel, "s", uniquePrompt(t, "storm")))
	var ae *anthropic.Error
	if !errors.As(err, &ae) {
		t.Fatalf("503 storm: %v, want an *anthropic.Error", err)
	}
	if ae.StatusCode != 529 || ae.Response.Header.Get("Retry-After") == "" {
		t.Errorf("503 storm: status %d retry-after %q, want 529 with retry-after", ae.StatusCode, ae.Response.Header.Get("Retry-After"))
	}
	var body struct {
		Type  string `json:"type"`
		Error struct{ Type, Message string }
	}
	if json.Unmarshal([]byte(ae.RawJSON()), &body); body.Type != "error" || body.Error.Type != "overloaded_error" {
		t.Errorf("503 storm: body %s, want Anthropic's overloaded_error", ae.RawJSON())
	}
	// Streamed, the same answer (nothing has started).
	s := c.Messages.NewStreaming(e.ctx, anthropicParams(anthropicModel, "s", uniquePrompt(t, "storm streamed")))
	for s.Next() {
	}
	if !errors.As(s.Err(), &ae) || ae.StatusCode != 529 {
		t.Errorf("503 storm, streamed: %v, want 529", s.Err())
	}
	s.Close()
}

// TestNodeSDKAnthropic runs @anthropic-ai/sdk (anthropic.mjs) against
// edgecache: messages.create and messages.stream, miss and hit.
func TestNodeSDKAnthropic(t *testing.T) {
	node, dir := nodeSDK(t)
	ensureNodePackage(t, dir, "@anthropic-ai/sdk")
	e := newSDKEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "anthropic.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGECACHE_BASE_URL="+e.data, "EDGECACHE_EXPECT_WORDS="+strconv.Itoa(sdkAnswerWords))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("node anthropic.mjs failed (%v):\n%s", err, out.String())
	}
	t.Logf("node anthropic.mjs:\n%s", out.String())
	if !strings.Contains(out.String(), "all 6 checks passed") {
		t.Fatalf("node anthropic.mjs did not report its 6 checks as passed:\n%s", out.String())
	}
	// Four delivery combinations, one miss each; the variants' base
	// request, another key, system prompt and model miss too. Bad input
	// never reaches the model.
	e.wantUpstreamCalls(t, pathMessages, 8, "the Node SDK checks")
}

// ensureNodePackage installs the locked packages when name (pinned in
// package.json) is not installed at its pinned version.
func ensureNodePackage(t *testing.T, dir, name string) {
	t.Helper()
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Dependencies[name] == "" {
		t.Fatalf("package.json does not pin %s (%v)", name, err)
	}
	var installed struct {
		Version string `json:"version"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json")); err == nil {
		_ = json.Unmarshal(b, &installed)
	}
	if installed.Version == pkg.Dependencies[name] {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm is not on PATH")
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
}

// TestGoSDKAnthropicCountTokensAndCutStream: count_tokens is passed
// through (every call reaches the model); a stream the model cuts after it
// started ends with Anthropic's error event, which the SDK raises, and is
// not stored.
func TestGoSDKAnthropicCountTokensAndCutStream(t *testing.T) {
	e, c := newAnthropicEnv(t)
	for i := range 2 {
		n, err := c.Messages.CountTokens(e.ctx, anthropic.MessageCountTokensParams{
			Model:    anthropicModel,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two three"))},
		})
		if err != nil || n.InputTokens != 3 {
			t.Fatalf("count_tokens %d: %+v %v", i, n, err)
		}
	}
	e.wantUpstreamCalls(t, "/v1/messages/count_tokens", 2, "two count_tokens calls")

	p := anthropicParams(anthropicModel, "s", uniquePrompt(t, "cut"))
	e.sim.Server.SetFault(llmsim.Fault{CutAfter: 3, Paths: []string{pathMessages}})
	s := c.Messages.NewStreaming(e.ctx, p)
	events := 0
	for s.Next() {
		events++
	}
	err := s.Err()
	s.Close()
	if err == nil || events == 0 {
		t.Fatalf("cut stream: %d events, err %v: want some events, then an error", events, err)
	}
	e.sim.Server.ClearFault()
	_, resp := anthropicOnce(t, e.ctx, c, "after the cut", p)
	wantMiss(t, "after the cut (not stored)", resp, true)
}
