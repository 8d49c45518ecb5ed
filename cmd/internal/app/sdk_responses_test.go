package app

// The Responses API through edgecache with the official openai-go SDK,
// unmodified but for its base URL: the same text on a miss and on the
// following hit in every delivery combination, misses where the request
// differs, server-side state passed by, errors in the OpenAI shape.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

const pathResponses = "/v1/responses"

func responsesParams(model, instructions, prompt string) responses.ResponseNewParams {
	p := responses.ResponseNewParams{
		Model: model,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)},
	}
	if instructions != "" {
		p.Instructions = openai.String(instructions)
	}
	return p
}

// createResponse calls responses.create, streamed or not, and returns the
// text the SDK assembled and the HTTP response.
func (e *sdkEnv) createResponse(t *testing.T, p responses.ResponseNewParams, stream bool) (string, *http.Response) {
	t.Helper()
	var hr *http.Response
	if !stream {
		r, err := e.client.Responses.New(e.ctx, p, option.WithResponseInto(&hr))
		if err != nil {
			t.Fatalf("Responses.New: %v", err)
		}
		if r.Status != "completed" {
			t.Errorf("status %q, want completed", r.Status)
		}
		return r.OutputText(), hr
	}
	s := e.client.Responses.NewStreaming(e.ctx, p, option.WithResponseInto(&hr))
	var deltas strings.Builder
	var types []string
	final := ""
	for s.Next() {
		ev := s.Current()
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			deltas.WriteString(ev.Delta)
		case "response.completed":
			final = ev.Response.OutputText()
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Responses.NewStreaming: %v", err)
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	at := 0
	for _, typ := range types {
		if at < len(want) && typ == want[at] {
			at++
		}
	}
	if at != len(want) {
		t.Errorf("stream events %v, want in order %v", types, want)
	}
	if deltas.String() != final {
		t.Errorf("deltas %q differ from the completed response's text %q", deltas.String(), final)
	}
	return final, hr
}

func TestResponsesSDKGoMissThenHit(t *testing.T) {
	e := newSDKEnv(t)
	calls := int64(0)
	for _, c := range []struct {
		name            string
		missSSE, hitSSE bool
	}{{"json-json", false, false}, {"json-stream", false, true}, {"stream-json", true, false}, {"stream-stream", true, true}} {
		prompt := uniquePrompt(t, "responses "+c.name)
		p := responsesParams("gpt-4o-mini", "Answer briefly.", prompt)
		missText, missResp := e.createResponse(t, p, c.missSSE)
		calls++
		wantMiss(t, c.name+" miss", missResp, !c.missSSE)
		checkAnswerText(t, c.name+" miss", missText, prompt)
		hitText, hitResp := e.createResponse(t, p, c.hitSSE)
		wantHit(t, c.name+" hit", hitResp)
		if hitText != missText {
			t.Errorf("%s: hit %q, miss %q", c.name, hitText, missText)
		}
		e.wantUpstreamCalls(t, pathResponses, calls, c.name)
		// Another prompt, other instructions, another model: misses.
		for what, q := range map[string]responses.ResponseNewParams{
			"another prompt":     responsesParams("gpt-4o-mini", "Answer briefly.", prompt+" too"),
			"other instructions": responsesParams("gpt-4o-mini", "Answer at length.", prompt),
			"another model":      responsesParams("gpt-4.1-mini", "Answer briefly.", prompt),
		} {
			_, r := e.createResponse(t, q, c.hitSSE)
			calls++
			wantMiss(t, c.name+" "+what, r, false)
		}
		e.wantUpstreamCalls(t, pathResponses, calls, c.name+" variants")
	}
}

func TestResponsesSDKGoServerState(t *testing.T) {
	e := newSDKEnv(t)
	p := responsesParams("gpt-4o-mini", "", uniquePrompt(t, "stored"))
	p.Store = openai.Bool(true)
	var hr *http.Response
	r, err := e.client.Responses.New(e.ctx, p, option.WithResponseInto(&hr))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.client.Responses.Get(e.ctx, r.ID, responses.ResponseGetParams{})
	if err != nil || got.OutputText() != r.OutputText() {
		t.Fatalf("Responses.Get through edgecache: %v (%q, want %q)", err, got.OutputText(), r.OutputText())
	}
	next := responsesParams("gpt-4o-mini", "", "and then?")
	next.PreviousResponseID = openai.String(r.ID)
	for i := 0; i < 2; i++ {
		if _, err := e.client.Responses.New(e.ctx, next, option.WithResponseInto(&hr)); err != nil {
			t.Fatal(err)
		}
		if cs := cacheStatus(hr); !strings.Contains(cs, "fwd=bypass; detail=previous_response_id") {
			t.Errorf("previous_response_id: Cache-Status %q, want a bypass", cs)
		}
	}
	if err := e.client.Responses.Delete(e.ctx, r.ID); err != nil {
		t.Fatalf("Responses.Delete through edgecache: %v", err)
	}
	if _, err := e.client.Responses.Get(e.ctx, r.ID, responses.ResponseGetParams{}); err == nil {
		t.Fatal("a deleted response is gone")
	}
}

func TestResponsesSDKGoErrors(t *testing.T) {
	e := newSDKEnv(t)
	var apiErr *openai.Error
	_, err := e.client.Responses.New(e.ctx, responses.ResponseNewParams{Model: "gpt-4o-mini"})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Code != "missing_required_parameter" || apiErr.Type != "invalid_request_error" {
		t.Fatalf("no input: %v, want a 400 invalid_request_error", err)
	}
	calls := e.upstreamCalls(pathResponses)
	e.sim.Server.SetFault(llmsim.Fault{Status: http.StatusServiceUnavailable, RetryAfter: 7})
	defer e.sim.Server.ClearFault()
	for _, stream := range []bool{false, true} {
		p := responsesParams("gpt-4o-mini", "", uniquePrompt(t, "storm"))
		var hr *http.Response
		if stream {
			s := e.client.Responses.NewStreaming(e.ctx, p, option.WithResponseInto(&hr))
			for s.Next() {
			}
			err = s.Err()
		} else {
			_, err = e.client.Responses.New(e.ctx, p, option.WithResponseInto(&hr))
		}
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.Type != "service_unavailable" {
			t.Fatalf("stream=%v: storm answered %v, want a 503 service_unavailable", stream, err)
		}
		if ra := apiErr.Response.Header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Errorf("stream=%v: Retry-After %q", stream, ra)
		}
	}
	if e.upstreamCalls(pathResponses) == calls {
		t.Error("the storm never reached the upstream")
	}
}

// TestNodeSDKResponses runs the official Node SDK's responses.create
// against edgecache (testdata/sdk-node/responses.mjs).
func TestNodeSDKResponses(t *testing.T) {
	node, dir := nodeSDK(t)
	e := newSDKEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "responses.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"EDGECACHE_BASE_URL="+e.data+"/v1",
		"EDGECACHE_SIM_URL="+e.sim.URL(),
		"EDGECACHE_EXPECT_WORDS="+strconv.Itoa(sdkAnswerWords))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("node responses.mjs failed (%v):\n%s", err, out.String())
	}
	t.Logf("node responses.mjs:\n%s", out.String())
	if !strings.Contains(out.String(), "all 6 checks passed") {
		t.Fatalf("node responses.mjs exited 0 without reporting its 6 checks as passed:\n%s", out.String())
	}
	// Four misses and three variants in each of the four delivery
	// combinations; the hits and the bad request never reached the model.
	if got := e.upstreamCalls(pathResponses); got < 16 {
		t.Errorf("llmsim received %d requests on %s, want at least 16", got, pathResponses)
	}
}

// Paths under /v1/responses are passed through as they came: method,
// path, query and body.
func TestResponsesSubpathsPassedThrough(t *testing.T) {
	type seen struct{ method, uri, body string }
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.RequestURI(), string(b)}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"ok"}`)
	}))
	defer up.Close()
	data, _ := startEdgecache(t, up.URL)
	for _, c := range []seen{
		{http.MethodPost, "/v1/responses/input_tokens", `{"model":"m","input":"hi"}`},
		{http.MethodPost, "/v1/responses/resp_1/cancel", ""},
		{http.MethodGet, "/v1/responses/resp_1/input_items?limit=2", ""},
		{http.MethodDelete, "/v1/responses/resp_1", ""},
	} {
		req, _ := http.NewRequest(c.method, data+c.uri, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=passthrough") {
			t.Errorf("%s %s: %d %q", c.method, c.uri, resp.StatusCode, resp.Header.Get("Cache-Status"))
			continue
		}
		if s := <-got; s != c {
			t.Errorf("upstream saw %+v, want %+v", s, c)
		}
	}
}
