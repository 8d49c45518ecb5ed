package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestGoSDKAzure points openai-go's unmodified Azure client (azure
// package: /openai/deployments/{model}/chat/completions?api-version=…,
// api-key header) at edgecache, which serves that path from a route with
// a {deployment} parameter and calls llmsim at the same path (llmsim
// serves Azure's layout too). The answer is the model's, the repeat is a
// hit, and another deployment with the same body is another answer (the
// deployment is part of the key); the api-key is the tenant: another key
// misses. Streaming through the same client assembles the same text.
func TestGoSDKAzure(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{AnswerTokens: sdkAnswerWords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte(`routes:
  - name: azure-chat
    path: /openai/deployments/{deployment}/chat/completions
`), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), sdkTestTimeout)
	defer cancel()
	client := func(key string) openai.Client {
		return openai.NewClient(azure.WithEndpoint(data, "2024-10-21"), azure.WithAPIKey(key), azure.WithUnsafeAllowHTTP())
	}
	ask := func(c openai.Client, deployment, prompt string) (*openai.ChatCompletion, *http.Response) {
		t.Helper()
		var resp *http.Response
		cc, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    deployment,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		}, option.WithResponseInto(&resp))
		if err != nil {
			t.Fatalf("%s: %v", deployment, err)
		}
		if want := fmt.Sprintf("/openai/deployments/%s/chat/completions", deployment); resp.Request.URL.Path != want || resp.Request.URL.Query().Get("api-version") == "" || resp.Request.Header.Get("Api-Key") == "" {
			t.Fatalf("the Azure client sent %s %v, want %s with api-version and api-key", resp.Request.URL, resp.Request.Header, want)
		}
		return cc, resp
	}
	alice := client("azure-key-alice")
	prompt := uniquePrompt(t, "Name a river")

	miss, resp := ask(alice, "gpt-4o-eu", prompt)
	wantMiss(t, "first", resp, true)
	checkAnswerText(t, "first", miss.Choices[0].Message.Content, prompt)
	hit, resp := ask(alice, "gpt-4o-eu", prompt)
	wantHit(t, "repeat", resp)
	if hit.Choices[0].Message.Content != miss.Choices[0].Message.Content {
		t.Errorf("hit %q, miss %q", hit.Choices[0].Message.Content, miss.Choices[0].Message.Content)
	}
	if _, resp := ask(alice, "gpt-4o-us", prompt); cacheStatus(resp) == "" || isHit(resp) {
		t.Errorf("another deployment: Cache-Status %q, want a miss", cacheStatus(resp))
	}
	if _, resp := ask(client("azure-key-bob"), "gpt-4o-eu", prompt); isHit(resp) {
		t.Errorf("another api-key: Cache-Status %q, want a miss", cacheStatus(resp))
	}
	if got := sim.Server.Stats()["/v1/chat/completions"]; got != 3 { // before the model-less requests
		t.Errorf("llmsim got %d chat calls, want 3 (one per deployment and key)", got)
	}

	// Azure's REST API takes the model from the path; a body without one
	// is served (and cached) too.
	for i, want := range []string{"fwd=uri-miss", "hit; detail=l1"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, data+"/openai/deployments/gpt-4o-eu/chat/completions?api-version=2024-10-21",
			strings.NewReader(`{"messages":[{"role":"user","content":"no model in this body"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("api-key", "azure-key-alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(cacheStatus(resp), want) {
			t.Errorf("no model, request %d: %d %q, want 200 and %q", i+1, resp.StatusCode, cacheStatus(resp), want)
		}
	}

	// An escaped "/" in the deployment is refused, not sent to another one.
	calls := sim.Server.Stats()["/v1/chat/completions"]
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, data+"/openai/deployments/gpt-4o-eu%2Fx/chat/completions?api-version=2024-10-21",
		strings.NewReader(`{"messages":[{"role":"user","content":"escaped slash"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("api-key", "azure-key-alice")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"code":"invalid_path"`) || sim.Server.Stats()["/v1/chat/completions"] != calls {
		t.Errorf("escaped slash in the deployment: %d %s, want a 400 invalid_path error and no upstream call", resp.StatusCode, b)
	}

	stream := alice.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-eu",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != miss.Choices[0].Message.Content {
		t.Errorf("streamed hit assembled %+v, want %q", acc.Choices, miss.Choices[0].Message.Content)
	}
}

func isHit(resp *http.Response) bool {
	cs := cacheStatus(resp)
	return len(cs) >= len("edgecache; hit") && cs[:len("edgecache; hit")] == "edgecache; hit"
}

// TestNodeSDKAzure runs the official Node SDK's AzureOpenAI client
// (testdata/sdk-node/azure.mjs) against edgecache serving Azure's layout:
// a miss, a hit, a streamed hit; one call reaches the model.
func TestNodeSDKAzure(t *testing.T) {
	node, dir := nodeSDK(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{AnswerTokens: sdkAnswerWords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte("routes:\n  - {name: azure-chat, path: \"/openai/deployments/{deployment}/chat/completions\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "azure.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGECACHE_ENDPOINT="+data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node azure.mjs failed (%v):\n%s", err, out)
	}
	if !strings.Contains(string(out), "all 3 checks passed") {
		t.Fatalf("node azure.mjs exited 0 without reporting its 3 checks as passed:\n%s", out)
	}
	if got := sim.Server.Stats()["/v1/chat/completions"]; got != 1 {
		t.Errorf("llmsim got %d chat calls, want 1 (the miss)", got)
	}
}
