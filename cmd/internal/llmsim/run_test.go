package llmsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func getURL(t *testing.T, url string) (int, []byte, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func TestStartAndClose(t *testing.T) {
	r, err := Start(context.Background(), "127.0.0.1:0", Config{AnswerTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^http://127\.0\.0\.1:[1-9][0-9]*$`).MatchString(r.URL()) {
		t.Errorf("URL() = %q", r.URL())
	}
	if code, b, err := getURL(t, r.URL()+"/v1/models"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/models: %d %s %v", code, b, err)
	}

	// A hung request must not hold Close up.
	r.Server.SetFault(Fault{Hang: true})
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Post(r.URL()+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))
		if err == nil {
			resp.Body.Close()
			err = errors.New("answered")
		}
		errc <- err
	}()
	waitFor(t, "the hung request", func() bool { return r.Server.InFlight() == 1 })
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-errc; err == nil {
		t.Error("hung request answered")
	}
	if r.Server.InFlight() != 0 {
		t.Errorf("InFlight() = %d after Close", r.Server.InFlight())
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := getURL(t, r.URL()+"/v1/models"); err == nil {
		t.Error("still serving after Close")
	}
}

func TestStartStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Start(ctx, "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-r.served:
	case <-time.After(10 * time.Second):
		t.Fatal("still serving 10s after ctx was cancelled")
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close after ctx: %v", err)
	}
}

func TestStartBadAddress(t *testing.T) {
	if r, err := Start(context.Background(), "256.0.0.1:http-nope", Config{}); err == nil {
		r.Close()
		t.Fatal("Start on a bad address succeeded")
	}
}

func TestMainServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	errc := make(chan error, 1)
	go func() {
		errc <- Main(ctx, []string{"--listen", "127.0.0.1:0", "--tokens", "5", "--ttft", "2ms", "--tps", "1000",
			"--max-concurrency", "3", "--embedding-dims", "8"}, outW, &stderr)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading stdout: %v (stderr %q)", err, stderr.String())
	}
	m := regexp.MustCompile(`^llmsim listening on (http://127\.0\.0\.1:[0-9]+)\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("stdout %q", line)
	}
	url := m[1]

	code, b, err := getURL(t, url+"/_sim/config")
	want := `{"ttft_ms":2,"tokens_per_sec":1000,"answer_tokens":5,"max_concurrency":3,"embedding_dims":8}`
	if err != nil || code != http.StatusOK || strings.TrimSpace(string(b)) != want {
		t.Errorf("config %d %s %v, want %s", code, b, err, want)
	}
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"flags"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var cc chatCompletion
	err = json.NewDecoder(resp.Body).Decode(&cc)
	resp.Body.Close()
	if err != nil || len(strings.Fields(cc.Choices[0].Message.Content)) != 5 || !strings.HasPrefix(cc.Choices[0].Message.Content, "sim:"+hash12("flags")) {
		t.Errorf("answer %+v, err %v", cc, err)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Main returned %v on cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Main did not return after cancel")
	}
	if _, _, err := getURL(t, url+"/v1/models"); err == nil {
		t.Error("still serving after Main returned")
	}
}

func TestMainFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--tokens", "-1"},
		{"--ttft", "soon"},
		{"--bogus"},
		{"--max-concurrency", "-2"},
		{"--embedding-dims", "100000"},
		{"extra"},
		{"--listen", "256.0.0.1:bad"},
	} {
		var stdout, stderr bytes.Buffer
		if err := Main(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("Main(%q) = nil, want an error", args)
		}
		if stdout.Len() != 0 {
			t.Errorf("Main(%q) printed %q", args, stdout.String())
		}
	}

	var stdout, stderr bytes.Buffer
	if err := Main(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Errorf("-h: %v", err)
	}
	if !strings.Contains(stderr.String(), "-max-concurrency") {
		t.Errorf("-h printed %q", stderr.String())
	}
}

func TestMainEmbedFold(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- Main(ctx, []string{"--listen", "127.0.0.1:0", "--embed-fold"}, outW, io.Discard)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("reading stdout: %v", err)
	}
	url := strings.TrimSpace(strings.TrimPrefix(line, "llmsim listening on "))
	code, b, err := getURL(t, url+"/_sim/config")
	if err != nil || code != http.StatusOK || !strings.Contains(string(b), `"embedding_fold":true`) {
		t.Errorf("config with --embed-fold: %d %s %v", code, b, err)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Main returned %v on cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Main did not return after cancel")
	}
}
