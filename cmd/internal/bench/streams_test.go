package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDeriveStreams(t *testing.T) {
	rep := StreamsReport{
		Direct:         StreamPhase{TTFTP50Ms: 10, TTFTP99Ms: 40},
		Edgecache:      StreamPhase{TTFTP50Ms: 12.5, TTFTP99Ms: 45, PeakOpen: 1000, Events: 200_000},
		BaselineRSSKiB: 20_000,
		PeakRSSKiB:     52_000,
		CPUSeconds:     1.5,
	}
	d := deriveStreams(rep)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("RSS per stream", d.RSSPerStreamKiB, 32)         // 32,000 KiB / 1,000 streams
	near("CPU ms per 1k events", d.CPUMsPer1kEvents, 7.5) // 1,500 ms / 200 thousand
	near("CPU µs per event", d.CPUUsPerEvent, 7.5)
	near("added p50", d.AddedTTFTP50Ms, 2.5)
	near("added p99", d.AddedTTFTP99Ms, 5)

	// Nothing open, no events, RSS below baseline: zeros, no division by 0.
	d = deriveStreams(StreamsReport{BaselineRSSKiB: 10, PeakRSSKiB: 5})
	if d.RSSPerStreamKiB != 0 || d.CPUMsPer1kEvents != 0 || d.CPUUsPerEvent != 0 {
		t.Errorf("degenerate: %+v", d)
	}
}

func TestParseProcFiles(t *testing.T) {
	kib, err := parseVmRSS([]byte("Name:\tedgecache\nVmPeak:\t  9 kB\nVmRSS:\t   26008 kB\nRssAnon: 1 kB\n"))
	if err != nil || kib != 26008 {
		t.Errorf("parseVmRSS = %d, %v", kib, err)
	}
	if _, err := parseVmRSS([]byte("Name: x\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
	// comm with spaces and parens; utime 7, stime 5 (fields 14, 15).
	stat := "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 100 1000 250"
	ticks, err := parseStatCPU([]byte(stat))
	if err != nil || ticks != 12 {
		t.Errorf("parseStatCPU = %d, %v", ticks, err)
	}
	if self, err := procCPUTicks(os.Getpid()); err != nil || self < 0 {
		t.Errorf("procCPUTicks(self) = %d, %v", self, err)
	}
	if rss, err := procRSSKiB(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("procRSSKiB(self) = %d, %v", rss, err)
	}
}

func TestParseStreamsFlags(t *testing.T) {
	c, err := parseStreamsFlags([]string{"--bin", "/x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.n != 2000 || c.tps != 20 || c.tokens != 200 || c.open {
		t.Errorf("defaults: %+v", c)
	}
	if want := 2*10*time.Second + 30*time.Second; c.timeout != want {
		t.Errorf("timeout = %v, want %v", c.timeout, want)
	}
	if _, err := parseStreamsFlags([]string{"--n", "10001"}, io.Discard); err == nil {
		t.Error("--n 10001 accepted")
	}
	if c, err := parseStreamsFlags([]string{"--n", "10000", "--open-admission"}, io.Discard); err != nil || !c.open {
		t.Errorf("--n 10000 --open-admission: %+v %v", c, err)
	}
	if c.degradeAfter != 0 || c.degradeTTFT != 2*time.Second || c.degradeN != 500 || c.degradeRamp != 10*time.Second {
		t.Errorf("degrade defaults: %+v", c)
	}
	c, err = parseStreamsFlags([]string{"--degrade-after", "5s", "--degrade-ttft", "3s", "--degrade-n", "40"}, io.Discard)
	if err != nil || c.degradeAfter != 5*time.Second || c.degradeTTFT != 3*time.Second || c.degradeN != 40 {
		t.Errorf("--degrade-*: %+v %v", c, err)
	}
	for _, bad := range [][]string{{"--degrade-after", "-1s"}, {"--degrade-ttft", "0s"}, {"--degrade-n", "-1"}} {
		if _, err := parseStreamsFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A burst: slow start from 100, the queue empties at 0.75 s; then TTFT
// rises at 3 s and slow start ends 2 s later.
var timeline = []LimitPoint{
	{T: 0, Limit: 100, SlowStart: true},
	{T: 0.25, Limit: 300, InFlight: 300, Queued: 1700, SlowStart: true},
	{T: 0.5, Limit: 1500, InFlight: 1500, Queued: 500, SlowStart: true},
	{T: 0.75, Limit: 3100, InFlight: 2000, SlowStart: true},
	{T: 2.9, Limit: 4000, InFlight: 2000, SlowStart: true},
	{T: 4.9, Limit: 4000, InFlight: 2100, SlowStart: true},
	{T: 5.1, Limit: 1050, InFlight: 2100, Queued: 30},
	{T: 8.1, Limit: 900, InFlight: 1000},
	{T: 13.1, Limit: 800, InFlight: 300},
}

func TestSummarizeLimit(t *testing.T) {
	s := summarizeLimit(timeline[:5], 0)
	want := LimitSummary{Start: 100, Peak: 4000, PeakAtS: 2.9, AtBurstS: 0.75, MaxQueued: 1700}
	if s != want {
		t.Errorf("burst only:\n got %+v\nwant %+v", s, want)
	}
	s = summarizeLimit(timeline, 3)
	want.BeforeDegrade, want.After2s, want.After5s, want.After10s, want.SlowStartEndedS = 4000, 4000, 1050, 900, 5.1-3
	if math.Abs(s.SlowStartEndedS-want.SlowStartEndedS) > 1e-9 {
		t.Errorf("slow start ended after %v, want %v", s.SlowStartEndedS, want.SlowStartEndedS)
	}
	s.SlowStartEndedS = want.SlowStartEndedS
	if s != want {
		t.Errorf("with a TTFT rise at 3 s:\n got %+v\nwant %+v", s, want)
	}
	if s := summarizeLimit(nil, 3); s != (LimitSummary{}) {
		t.Errorf("no timeline: %+v", s)
	}
}

func TestWriteStreamsMarkdownLimit(t *testing.T) {
	rep := StreamsReport{Command: "edgebench streams --degrade-after 3s", N: 2000, TokensPerSec: 20, Tokens: 200,
		Edgecache: StreamPhase{N: 2000, Admitted: 1900, Intact: 1900, Failures: map[string]int{"status 503": 100}},
		Degraded:  &StreamPhase{N: 500, Admitted: 400, Intact: 400, Failures: map[string]int{"status 503": 100}},
		Limit:     timeline, DegradeAtS: 3, DegradeTTFTMs: 2000}
	rep.LimitSummary = summarizeLimit(rep.Limit, rep.DegradeAtS)
	rep.Derived = deriveStreams(rep)
	var b strings.Builder
	if err := WriteStreamsMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| through edgecache | 1900 / 2000 | 1900 / 2000 |",
		"| second wave, llmsim TTFT 2000 ms | 400 / 500 | 400 / 500 |",
		"| burst admitted (status 200) | 95.0 % |",
		"| adaptive limit, burst | 100 at start → 4000 at 2.90 s; up to 1700 queued, none left at 0.75 s |",
		"4000 before → 4000 after 2 s → 1050 after 5 s → 900 after 10 s; slow start ended 2.10 s after",
		"| 3.00 s | | | | | **llmsim TTFT raised** |",
		"| 5.10 s | 1050 | 2100 | 30 | 0 ms | gradient |",
		"Failures (second wave, llmsim TTFT 2000 ms): status 503 100;",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStreamsConfigYAML(t *testing.T) {
	def := streamsConfigYAML(streamsConfig{n: 100}, "http://127.0.0.1:1")
	if strings.Contains(def, "admission") {
		t.Errorf("default config sets admission:\n%s", def)
	}
	open := streamsConfigYAML(streamsConfig{n: 100, open: true}, "http://127.0.0.1:1")
	if !strings.Contains(open, "concurrency: {initial: 200, min: 200, max: 200}") || !strings.Contains(open, "max_in_flight: 200") {
		t.Errorf("open admission config:\n%s", open)
	}
}

// sseStub streams tokens content events, a finish chunk and [DONE]; cut
// requests (prompt containing " 1:") end early.
func sseStub(tokens int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Cache-Control") != "no-store" {
			http.Error(w, "want no-store", 400)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
		for i := range tokens {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"w%d \"}}]}\n\n", i)
			if bytes.Contains(body, []byte(" 1:")) && i == 1 {
				return
			}
		}
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	})
}

func TestRunStreamsAgainstStub(t *testing.T) {
	srv := httptest.NewServer(sseStub(4))
	defer srv.Close()
	res := RunStreams(context.Background(), StreamSpec{URL: srv.URL, N: 10, Tokens: 4, Timeout: 5 * time.Second, RunID: "t"})
	if res.N != 10 || res.Intact != 9 || res.Failures["no [DONE]"] != 1 {
		t.Errorf("result: %+v", res)
	}
	// 9 intact × (role + 4 + finish + DONE) + the cut one (role + 2).
	if res.Events != 9*7+3 {
		t.Errorf("events = %d", res.Events)
	}
	if res.PeakOpen < 1 || res.TTFTP99Ms < res.TTFTP50Ms {
		t.Errorf("peak/ttft: %+v", res)
	}
}

func TestWriteStreamsMarkdown(t *testing.T) {
	rep := StreamsReport{Command: "edgebench streams", N: 2, TokensPerSec: 20, Tokens: 200, OpenAdmission: true,
		Edgecache: StreamPhase{N: 2, Intact: 1, Failures: map[string]int{"status 503": 1}}}
	rep.Derived = deriveStreams(rep)
	var b strings.Builder
	if err := WriteStreamsMarkdown(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"open admission", "| through edgecache | 1 / 2 |", "RSS per open stream", "CPU per 1,000 relayed events", "status 503 1"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
	data, err := json.Marshal(rep)
	if err != nil || !bytes.Contains(data, []byte(`"rss_per_open_stream_kib"`)) {
		t.Errorf("json: %s %v", data, err)
	}
}

// TestStreamsSmoke builds the three binaries and runs `edgebench streams`
// with 20 short streams (a few seconds).
func TestStreamsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	if _, err := exec.LookPath("taskset"); err != nil || runtime.NumCPU() < 2 {
		t.Skip("needs taskset and 2 CPUs")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin, "github.com/edgecache/edgecache/cmd/edgebench",
		"github.com/edgecache/edgecache/cmd/edgecache", "github.com/edgecache/edgecache/cmd/llmsim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	jsonPath := filepath.Join(bin, "streams.json")
	var out, errb bytes.Buffer
	err := Main(context.Background(), "edgebench", []string{"streams", "--bin", bin, "--n", "20", "--tokens", "5",
		"--tps", "50", "--open-admission", "--degrade-after", "300ms", "--degrade-ttft", "50ms", "--degrade-n", "4",
		"--degrade-ramp", "0s", "--json", jsonPath}, &out, &errb)
	if err != nil {
		t.Fatalf("streams: %v\n%s\n%s", err, out.String(), errb.String())
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep StreamsReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Direct.Intact != 20 || rep.Edgecache.Intact != 20 || rep.Edgecache.Admitted != 20 || rep.Edgecache.Events == 0 || rep.BaselineRSSKiB == 0 {
		t.Errorf("report: %+v\n%s", rep, out.String())
	}
	// --open-admission fixes the limit at 2 × n; the timeline shows it.
	if len(rep.Limit) == 0 || rep.Limit[0].Limit != 40 || rep.Limit[0].SlowStart {
		t.Errorf("limit timeline: %+v", rep.Limit)
	}
	if rep.Degraded == nil || rep.Degraded.Intact != 4 || rep.DegradeAtS <= 0 || rep.DegradeTTFTMs != 50 {
		t.Errorf("second wave: %+v at %v s, %v ms", rep.Degraded, rep.DegradeAtS, rep.DegradeTTFTMs)
	}
	// The same streams through the minimal proxy, its own process measured.
	if ref := rep.Reference; ref == nil || ref.Phase.Intact != 20 || ref.Phase.Events != rep.Edgecache.Events ||
		ref.BaselineRSSKiB == 0 || ref.PeakRSSKiB < ref.BaselineRSSKiB || ref.BaselineRSSKiB == rep.BaselineRSSKiB {
		t.Errorf("reference: %+v", rep.Reference)
	}
	if !strings.Contains(out.String(), "minimal proxy") {
		t.Errorf("markdown lacks the reference:\n%s", out.String())
	}
	if rep.UpstreamH2C || rep.UpstreamHTTP2 != 0 {
		t.Errorf("without --upstream-h2c: h2c %v, %d requests over HTTP/2", rep.UpstreamH2C, rep.UpstreamHTTP2)
	}

	// --upstream-h2c: edgecache reaches llmsim over HTTP/2, every stream.
	out.Reset()
	err = Main(context.Background(), "edgebench", []string{"streams", "--bin", bin, "--n", "20", "--tokens", "5",
		"--tps", "50", "--open-admission", "--no-reference", "--upstream-h2c", "--json", jsonPath}, &out, &errb)
	if err != nil {
		t.Fatalf("streams --upstream-h2c: %v\n%s\n%s", err, out.String(), errb.String())
	}
	if data, err = os.ReadFile(jsonPath); err != nil {
		t.Fatal(err)
	}
	rep = StreamsReport{}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.UpstreamH2C || rep.UpstreamHTTP2 < 20 || rep.Edgecache.Intact != 20 {
		t.Errorf("--upstream-h2c: h2c %v, %d requests over HTTP/2, %d intact; want true, ≥ 20, 20", rep.UpstreamH2C, rep.UpstreamHTTP2, rep.Edgecache.Intact)
	}
}

// TestProxyFlushesEvents: the reference proxy passes each event of a
// stream on as it arrives, not when the stream ends.
func TestProxyFlushesEvents(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release // the stream stays open until the client saw the first event
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	defer close(release)
	u, _ := url.Parse(up.URL)
	px := httptest.NewServer(ProxyHandler(u, http.DefaultTransport))
	defer px.Close()
	client := &http.Client{Timeout: 5 * time.Second} // a proxy that holds the event fails, not hangs
	resp, err := client.Post(px.URL+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line through the proxy: %q, %v", line, err)
	}
}

// TestServerUnderTest: the live process last started on the server CPU is
// the one whose CPU time a row reads, and it is taskset's own pid.
func TestServerUnderTest(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil || runtime.NumCPU() < 2 {
		t.Skip("needs taskset and 2 CPUs")
	}
	var ps procs
	defer func() { _ = ps.stopAll() }()
	if pid := ps.serverUnderTest(); pid != 0 {
		t.Fatalf("no process: pid %d", pid)
	}
	dir := t.TempDir()
	server, err := ps.startPinned(dir, "server", serverCPU, "/bin/sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.startPinned(dir, "load", loadCPU, "/bin/sleep", "30"); err != nil {
		t.Fatal(err)
	}
	pid := ps.serverUnderTest()
	if pid != server.cmd.Process.Pid {
		t.Fatalf("serverUnderTest = %d, want %d", pid, server.cmd.Process.Pid)
	}
	// taskset execs: the pid soon runs sleep itself.
	deadline := time.Now().Add(5 * time.Second)
	for {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d runs %q, not sleep", pid, comm)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := procCPUTicks(pid); err != nil {
		t.Error(err)
	}
	_ = server.stop(time.Second)
	if pid := ps.serverUnderTest(); pid != 0 {
		t.Errorf("after stop: pid %d", pid)
	}
}

func TestSummarizeRecovery(t *testing.T) {
	pts := []LimitPoint{{T: 0, Limit: 100, SlowStart: true}, {T: 5, Limit: 900}, {T: 10, Limit: 400},
		{T: 12, Limit: 380}, {T: 18, Limit: 390, SlowStart: true}, {T: 19, Limit: 1500, SlowStart: true}, {T: 21, Limit: 1200}}
	rs := summarizeRecovery(pts, 11)
	if rs.AtRecover != 400 || rs.Peak != 1500 || rs.PeakAfterS != 8 || rs.SlowStartS != 7 {
		t.Fatalf("%+v", rs)
	}
	if rs := summarizeRecovery(pts[:4], 11); rs.SlowStartS != -1 || rs.Peak != 380 {
		t.Fatalf("no restart: %+v", rs)
	}
}

func TestStreamsRecoverFlags(t *testing.T) {
	if _, err := parseStreamsFlags([]string{"--recover-after", "10s"}, io.Discard); err == nil {
		t.Fatal("--recover-after without --degrade-after accepted")
	}
	c, err := parseStreamsFlags([]string{"--n", "300", "--degrade-after", "5s", "--recover-after", "10s"}, io.Discard)
	if err != nil || c.recoverAfter != 10*time.Second || c.recoverN != 300 || c.recoverRamp != 10*time.Second {
		t.Fatalf("%+v %v", c, err)
	}
}

// TestStreamPromptBytes: --prompt-bytes puts a system message of about
// that size before the question, in valid JSON.
func TestStreamPromptBytes(t *testing.T) {
	var mu sync.Mutex
	var seen []int // system message lengths
	stub := sseStub(4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct{ Role, Content string } `json:"messages"`
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body)) // the stub reads it too
		if err := json.Unmarshal(body, &req); err != nil || len(req.Messages) != 2 || req.Messages[0].Role != "system" {
			http.Error(w, fmt.Sprintf("messages %+v, err %v", req.Messages, err), http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen = append(seen, len(req.Messages[0].Content))
		mu.Unlock()
		stub.ServeHTTP(w, r)
	}))
	defer srv.Close()
	res := RunStreams(context.Background(), StreamSpec{URL: srv.URL, N: 3, Tokens: 4, Timeout: 5 * time.Second, RunID: "p", PromptBytes: 4000})
	if res.Admitted != 3 {
		t.Fatalf("result: %+v", res)
	}
	for _, n := range seen {
		if n < 4000 || n > 4008 {
			t.Errorf("system message of %d bytes, want about 4000", n)
		}
	}
}
