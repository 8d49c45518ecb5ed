//go:build linux

package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
	"github.com/edgecache/edgecache/cmd/internal/server"
)

// Time limits of the browser test: every step (a DevTools call, a wait for
// a DOM condition) has its own deadline, so a hung browser fails the test
// instead of stalling it.
const (
	browserStartTimeout = 30 * time.Second
	browserStepTimeout  = 20 * time.Second
	browserStopTimeout  = 10 * time.Second
)

// TestReviewPageInChromium drives the review page in headless Chromium the
// way an operator would: load it, filter the journal with its form, toggle
// a route's cache mode with the route's form, and check that the data port
// obeys. A full-page screenshot is kept as an artifact.
func TestReviewPageInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	t.Setenv("EDGECACHE_POLICY_FILE", filepath.Join(t.TempDir(), "routes.json"))
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	// The breaker must stay closed through the failures below: the data
	// port is checked against the upstream afterwards.
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte("degrade:\n  breaker: {consecutive: 1000, min_requests: 1000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, admin := startEdgecache(t, sim.URL(), "--config", cfg)

	// Busy answers on two routes, so the route filter has something to drop.
	sim.Server.SetFault(llmsim.Fault{Status: 503})
	for i := range 4 {
		postDegraded(t, data+"/v1/chat/completions", fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"review me %d"}]}`, i))
	}
	for i := range 2 {
		postDegraded(t, data+"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":"complete me %d"}`, i))
	}
	waitUntil(t, func() bool { return journalCount(t, admin, "") == 6 })

	b := startBrowser(t, chromium)
	p := b.newPage(t)

	// Load: every busy record is listed, and the policies and upstreams are shown.
	p.navigate(admin + "/admin/ui")
	p.waitFor("the journal with 6 records", `document.querySelectorAll('#journal tr.record').length === 6`)
	var rows []struct{ Route, Rung, Status, Reason string }
	p.eval(`[...document.querySelectorAll('#journal tr.record')].map(r => ({route: r.dataset.route, rung: r.dataset.rung,
		status: r.querySelector('.status').textContent.trim(), reason: r.querySelector('.reason').textContent.trim()}))`, &rows)
	routes := map[string]int{}
	for _, r := range rows {
		routes[r.Route]++
		if r.Rung != "busy" || r.Status != "503" || r.Reason == "" {
			p.fatalf("journal row %+v: want a busy 503 with a reason", r)
		}
	}
	if routes["chat"] != 4 || routes["completions"] != 2 {
		p.fatalf("journal rows by route %v, want chat 4, completions 2", routes)
	}
	var initialMode string
	p.eval(`document.querySelector('#route-chat').dataset.mode`, &initialMode)
	if initialMode == "" || initialMode == "off" {
		p.fatalf("chat route mode %q before the toggle, want a caching mode", initialMode)
	}
	var upstream string
	p.eval(`document.querySelector('#upstream-table tr.upstream[data-target="primary"]')?.textContent ?? ''`, &upstream)
	if !strings.Contains(upstream, "primary") {
		p.fatalf("upstream table has no row for target primary")
	}

	// Filter: route chat, rung busy, the last 10 minutes.
	p.setValue(`#journal-filter select[name="route"]`, "chat")
	p.setValue(`#journal-filter select[name="rung"]`, "busy")
	p.typeInto(`#journal-filter input[name="since"]`, "10m")
	p.submit("the journal filtered to route chat, rung busy", `#filter-apply`,
		`new URLSearchParams(location.search).get('rung') === 'busy' && new URLSearchParams(location.search).get('route') === 'chat' &&
		 [...document.querySelectorAll('#journal tr.record')].length === 4 &&
		 [...document.querySelectorAll('#journal tr.record')].every(r => r.dataset.route === 'chat' && r.dataset.rung === 'busy')`)
	var kept []string
	p.eval(`['route', 'rung', 'since'].map(n => document.querySelector('#journal-filter [name="' + n + '"]').value)`, &kept)
	if strings.Join(kept, ",") != "chat,busy,10m" {
		p.fatalf("filter form after submit shows %q, want chat,busy,10m", kept)
	}

	// A bad value is refused with a message on the page, not raw JSON.
	p.setValue(`#route-chat input[name="ttl"]`, "soon")
	p.submit("the ttl error message", `#form-chat button.apply`,
		`(document.querySelector('#flash-error')?.textContent ?? '').includes('Route chat not changed')`)
	var msg string
	p.eval(`document.querySelector('#flash-error').textContent`, &msg)
	if !strings.Contains(msg, `"soon"`) {
		p.fatalf("error flash %q does not name the bad ttl", msg)
	}

	// Toggle: chat's cache mode off, through its form.
	p.setValue(`#route-chat select[name="mode"]`, "off")
	p.submit("the chat route in mode off", `#form-chat button.apply`,
		`document.querySelector('#route-chat')?.dataset.mode === 'off'`)
	var after struct {
		Badge, Select, Flash, Change string
		Rows                         int
	}
	p.eval(`({badge: document.querySelector('#route-chat .badge.mode').textContent.trim(),
		select: document.querySelector('#route-chat select[name="mode"]').value,
		flash: document.querySelector('#flash')?.textContent ?? '',
		change: document.querySelector('#route-chat').textContent,
		rows: document.querySelectorAll('#journal tr.record').length})`, &after)
	if after.Badge != "off" || after.Select != "off" || !strings.Contains(after.Flash, "Route chat: mode off (by local)") ||
		!strings.Contains(after.Change, "by local") || after.Rows != 4 {
		p.fatalf("after the toggle: %+v; want mode off in badge and select, a flash naming the change, the change by local, the filter kept (4 rows)", after)
	}
	// The change is the API's too, and the data port obeys it.
	if code, body := get(t, admin+"/admin/routes/chat", ""); code != 200 || !bytes.Contains(body, []byte(`"mode":"off"`)) ||
		!bytes.Contains(body, []byte(`"updated_by":"local"`)) {
		p.fatalf("/admin/routes/chat after the toggle: %d %s", code, body)
	}
	sim.Server.SetFault(llmsim.Fault{})
	resp, err := http.Post(data+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"after the toggle"}]}`))
	if err != nil {
		p.fatalf("data port: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); resp.StatusCode != 200 || cs != "edgecache; fwd=bypass; detail=off" {
		p.fatalf("data port after the toggle: %d Cache-Status %q, want 200 %q", resp.StatusCode, cs, "edgecache; fwd=bypass; detail=off")
	}

	path := filepath.Join(artifactsDir(t), "review-page.png")
	p.screenshot(path)
	checkPNG(t, path)
	t.Logf("screenshot of the review page: %s", path)
}

// TestReviewPageGuards checks the page's protections and its messages
// without a browser: cross-site and rebinding requests are refused,
// reflected input is escaped, mistakes come back as messages on the page.
func TestReviewPageGuards(t *testing.T) {
	t.Setenv("EDGECACHE_POLICY_FILE", filepath.Join(t.TempDir(), "routes.json"))
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	_, admin := startEdgecache(t, sim.URL())
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, form url.Values, header map[string]string) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, admin+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	chatMode := func() string {
		t.Helper()
		_, b := get(t, admin+"/admin/routes/chat", "")
		var v struct{ Mode string }
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("/admin/routes/chat: %s", b)
		}
		return v.Mode
	}
	mode := chatMode()

	resp, body := do("GET", "/admin/ui", nil, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
		!strings.Contains(body, "Degraded answers") || !strings.Contains(body, `id="cache-table"`) {
		t.Fatalf("GET /admin/ui: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	if strings.Contains(body, "<script") {
		t.Error("the page has a script element; it is meant to work without JavaScript")
	}

	resp, body = do("GET", "/admin/ui?since=yesterday&tenant="+url.QueryEscape(`<script>alert(1)</script>`), nil, nil)
	if resp.StatusCode != 400 || !strings.Contains(body, "Filter not applied") || !strings.Contains(body, "yesterday") ||
		strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("bad filter with markup: %d\n%s", resp.StatusCode, body)
	}

	if resp, body := do("GET", "/admin/ui", nil, map[string]string{"Host": "rebound.example:" + portOf(admin)}); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("GET with a non-loopback Host on a token-less listener: %d %s, want 421", resp.StatusCode, body)
	}

	off := url.Values{"mode": {"off"}, "templates": {"on"}}
	for name, h := range map[string]map[string]string{
		"cross-site Origin":         {"Origin": "http://evil.example"},
		"cross-site Sec-Fetch-Site": {"Sec-Fetch-Site": "cross-site", "Origin": admin},
		"foreign Referer only":      {"Referer": "http://evil.example/page"},
		"null Origin":               {"Origin": "null"},
	} {
		resp, body := do("POST", "/admin/ui/routes/chat", off, h)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Cross-site form submission refused") {
			t.Errorf("%s: %d %s, want 403", name, resp.StatusCode, body)
		}
	}
	if got := chatMode(); got != mode {
		t.Fatalf("chat mode %q after refused posts, want %q", got, mode)
	}

	flash := func(resp *http.Response) (ok, failed string) {
		t.Helper()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || err != nil || loc.Path != "/admin/ui" {
			t.Fatalf("POST answered %d Location %q, want 303 to /admin/ui", resp.StatusCode, resp.Header.Get("Location"))
		}
		if loc.Query().Get("rung") != "busy" {
			t.Errorf("redirect %q lost the journal filter", loc)
		}
		return loc.Query().Get("flash"), loc.Query().Get("flash_error")
	}
	same := map[string]string{"Origin": admin, "Sec-Fetch-Site": "same-origin"}
	form := func(extra url.Values) url.Values {
		f := url.Values{"back": {"rung=busy&evil=x"}}
		for k, v := range extra {
			f[k] = v
		}
		return f
	}
	// A stale form is refused rather than undoing a newer change.
	resp, _ = do("POST", "/admin/ui/routes/chat", form(url.Values{"mode": {"off"}, "templates": {"on"}, "version": {"99"}}), same)
	if _, failed := flash(resp); !strings.Contains(failed, "changed since this page was loaded") {
		t.Errorf("stale version: flash_error %q", failed)
	}
	resp, _ = do("POST", "/admin/ui/routes/nope", form(url.Values{"mode": {"off"}}), same)
	if _, failed := flash(resp); !strings.Contains(failed, "no such route") {
		t.Errorf("unknown route: flash_error %q", failed)
	}
	resp, _ = do("POST", "/admin/ui/routes/chat", form(url.Values{"mode": {"sometimes"}, "templates": {"on"}}), same)
	if _, failed := flash(resp); !strings.Contains(failed, "Route chat not changed") {
		t.Errorf("bad mode: flash_error %q", failed)
	}
	// Only changed fields are sent: the override is the mode alone.
	resp, _ = do("POST", "/admin/ui/routes/chat", form(url.Values{"mode": {"off"}, "templates": {"on"}, "version": {"0"}}), same)
	if ok, failed := flash(resp); ok != "Route chat: mode off (by local)." || failed != "" {
		t.Errorf("toggle: flash %q, flash_error %q", ok, failed)
	}
	if got := chatMode(); got != "off" {
		t.Errorf("chat mode %q after the toggle, want off", got)
	}
	resp, _ = do("POST", "/admin/ui/routes/chat", form(url.Values{"action": {"reset"}}), same)
	if ok, _ := flash(resp); !strings.Contains(ok, "reset to the configuration file") || chatMode() != mode {
		t.Errorf("reset: flash %q, mode %q, want %q", ok, chatMode(), mode)
	}
	resp, _ = do("POST", "/admin/ui/routes/chat/purge", form(nil), same)
	if ok, _ := flash(resp); !strings.Contains(ok, "Route chat purged: key generation 1") {
		t.Errorf("purge: flash %q", ok)
	}
	// The flash is shown escaped.
	_, body = do("GET", "/admin/ui?flash_error="+url.QueryEscape(`<b>x</b>`), nil, nil)
	if !strings.Contains(body, `id="flash-error" role="alert">&lt;b&gt;x&lt;/b&gt;`) {
		t.Errorf("flash_error not shown escaped:\n%s", body)
	}
}

// TestReviewPageCacheSection renders the Cache section from an AdminAPI
// that reports cache statistics (server.CacheStatser).
func TestReviewPageCacheSection(t *testing.T) {
	api := &cacheStatsAPI{}
	srv := httptest.NewServer(server.Admin(http.NotFoundHandler(), func() map[string]any { return nil }, api,
		server.NewAdminAuth("127.0.0.1:0", nil), slog.New(slog.DiscardHandler)))
	defer srv.Close()
	code, b := get(t, srv.URL+"/admin/ui", "")
	body := string(b)
	for _, want := range []string{`id="cache-table"`, `data-route="chat" data-tier="l1"`, "75.0 %", "no lookups", "Counted since 2026-01-02T03:04:05Z",
		`id="saved-routes"`, `data-route="chat">`, "<td class=\"num\">1500</td>", "0.0011 USD", `data-tenant="t:b"`} {
		if !strings.Contains(body, want) {
			t.Errorf("cache section lacks %q", want)
		}
	}
	if code != 200 || strings.Contains(body, "cache-pending") {
		t.Errorf("%d\n%s", code, body)
	}
}

// cacheStatsAPI is a fake AdminAPI with cache statistics and nothing else.
type cacheStatsAPI struct{ server.AdminAPI }

var _ server.CacheStatser = (*cacheStatsAPI)(nil)

func (cacheStatsAPI) Upstreams() any { return map[string]any{"upstreams": []any{}} }
func (cacheStatsAPI) Routes() any    { return map[string]any{"routes": []any{}} }
func (cacheStatsAPI) Degradations(context.Context, url.Values) (any, error) {
	return map[string]any{"degradations": []any{}, "count": 0}, nil
}
func (cacheStatsAPI) CacheStats() any {
	return map[string]any{"since": "2026-01-02T03:04:05Z", "tiers": []map[string]any{
		{"route": "chat", "tier": "l1", "hits": 3, "misses": 1},
		{"route": "chat", "tier": "semantic", "hits": 0, "misses": 0},
	}, "saved": []map[string]any{
		{"route": "chat", "tenant": "t:a", "hits": 2, "input_tokens": 200, "output_tokens": 800, "cost": 0.0009, "currency": "USD"},
		{"route": "chat", "tenant": "t:b", "hits": 1, "input_tokens": 100, "output_tokens": 400, "cost": 0.0002, "currency": "USD"},
	}}
}

// TestReviewPageShowsTokensSaved: a cache hit on the running service shows
// on the review page as tokens saved for its route and tenant, priced from
// the configuration.
func TestReviewPageShowsTokensSaved(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte("pricing:\n  m: {input_per_million: 1000, output_per_million: 2000, currency: EUR}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, admin := startEdgecache(t, sim.URL(), "--config", cfg)
	for range 3 {
		req, _ := http.NewRequest(http.MethodPost, data+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"save me"}]}`))
		req.Header.Set("Authorization", "Bearer sk-tenant-one-0123456789")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	_, b := get(t, admin+"/admin/ui", "")
	body := string(b)
	for _, want := range []string{`id="saved-routes"`, `<tr class="saved" data-route="chat">`, `<tr class="saved-tenant" data-tenant="t:`, " EUR</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("review page lacks %q", want)
		}
	}
	_, m := get(t, admin+"/metrics", "")
	for _, want := range []string{`edgecache_cost_saved_total{currency="EUR",route="chat",tenant="t:`, `edgecache_tokens_saved_total{route="chat",tenant="t:`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	checkMetricsWithPromtool(t, m)
	if t.Failed() {
		i := strings.Index(body, `id="saved"`)
		t.Logf("page from saved: %.3000s", body[max(i, 0):])
	}
}

// postDegraded sends one request that must be answered busy.
func postDegraded(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if d := resp.Header.Get("X-Edgecache-Degraded"); d != "busy" {
		t.Fatalf("POST %s: %d degraded %q, want busy", url, resp.StatusCode, d)
	}
}

func journalCount(t *testing.T, admin, query string) int {
	t.Helper()
	code, b := get(t, admin+"/admin/degradations?"+query, "")
	var v struct{ Count int }
	if code != 200 || json.Unmarshal(b, &v) != nil {
		t.Fatalf("journal query: %d %s", code, b)
	}
	return v.Count
}

func portOf(base string) string {
	u, _ := url.Parse(base)
	return u.Port()
}

// artifactsDir is where the test keeps files for CI to collect:
// $EDGECACHE_ARTIFACTS_DIR when set, else a temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGECACHE_ARTIFACTS_DIR")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkPNG fails unless path is a PNG of a real page (a blank or broken
// capture is small or does not decode).
func checkPNG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s does not decode as PNG: %v", path, err)
	}
	if r := img.Bounds(); len(b) < 30<<10 || r.Dx() < 1000 || r.Dy() < 700 {
		t.Fatalf("screenshot %s is %d bytes, %dx%d: too small to show the page", path, len(b), r.Dx(), r.Dy())
	}
}

// chromiumPath finds the browser: $EDGECACHE_CHROMIUM, else chromium on
// PATH (Debian's chromium package).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EDGECACHE_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run `make deps` (it installs Debian's chromium package), " +
			"or set EDGECACHE_CHROMIUM to a Chromium or Chrome binary")
	}
	return p
}

// browser is headless Chromium spoken to over the DevTools protocol on a
// pipe (--remote-debugging-pipe: JSON messages ended by NUL on fds 3 and 4),
// so there is no port to find and no WebSocket to speak.
type browser struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     *os.File // our end of the browser's fd 3
	out    *os.File // our end of the browser's fd 4
	log    *edgecacheOutput
	nextID atomic.Int64

	wmu sync.Mutex // one message at a time on the pipe

	mu      sync.Mutex
	pending map[int64]chan cdpReply

	done    chan struct{} // closed when the reader stops (the browser is gone)
	readErr error         // set before done is closed
	exited  chan struct{} // closed when the process has been waited for
}

type cdpReply struct {
	Result json.RawMessage
	Error  *cdpError
}

type cdpError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// startBrowser starts Chromium in its own process group; at cleanup the
// whole group is killed, whatever the test's outcome.
func startBrowser(t *testing.T, path string) *browser {
	t.Helper()
	profile := t.TempDir() // removed after the cleanup below has killed the browser
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, in: inW, out: outR, log: new(edgecacheOutput), pending: map[int64]chan cdpReply{},
		done: make(chan struct{}), exited: make(chan struct{})}
	b.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--disable-extensions", "--mute-audio", "--hide-scrollbars", "--no-default-browser-check",
		"--user-data-dir="+profile, "--remote-debugging-pipe", "--window-size=1440,1000", "about:blank")
	b.cmd.ExtraFiles = []*os.File{inR, outW} // fds 3 and 4
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.WaitDelay = browserStopTimeout
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v (run `make deps` to install Debian's chromium package)", path, err)
	}
	inR.Close()
	outW.Close()
	go func() {
		defer close(b.exited)
		_ = b.cmd.Wait()
	}()
	go b.read()
	t.Cleanup(b.stop)
	return b
}

// stop asks the browser to close, then kills its process group (renderers
// and helpers too) and waits, each step bounded.
func (b *browser) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_ = b.call(ctx, "", "Browser.close", nil, nil)
	cancel()
	// Our own child's group, by its id: the leader's pid is the group id.
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	b.in.Close()
	select {
	case <-b.exited:
	case <-time.After(2 * browserStopTimeout):
		b.t.Errorf("chromium (pid %d) did not exit after SIGKILL", b.cmd.Process.Pid)
	}
	select {
	case <-b.done:
	case <-time.After(browserStopTimeout):
		b.t.Errorf("the DevTools pipe did not close")
	}
	b.out.Close()
	if b.t.Failed() {
		b.t.Logf("chromium output (tail):\n%s", b.log.tail(8<<10))
	}
}

// read dispatches replies to their callers until the pipe closes. Events
// are not needed: the test waits for DOM conditions instead.
func (b *browser) read() {
	r := bufio.NewReaderSize(b.out, 1<<20)
	var err error
	for {
		var msg []byte
		if msg, err = r.ReadBytes(0); err != nil {
			break
		}
		var m struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *cdpError       `json:"error"`
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- cdpReply{Result: m.Result, Error: m.Error} // buffered
		}
	}
	b.readErr = err
	close(b.done)
}

// call sends one DevTools command (to the browser, or to a page when
// session is set) and decodes its result into result unless it is nil.
func (b *browser) call(ctx context.Context, session, method string, params, result any) error {
	id := b.nextID.Add(1)
	ch := make(chan cdpReply, 1)
	b.mu.Lock()
	b.pending[id] = ch
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
	}()
	msg, err := json.Marshal(struct {
		ID        int64  `json:"id"`
		Method    string `json:"method"`
		Params    any    `json:"params,omitempty"`
		SessionID string `json:"sessionId,omitempty"`
	}{id, method, params, session})
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = b.in.SetWriteDeadline(dl)
	}
	b.wmu.Lock()
	_, err = b.in.Write(append(msg, 0))
	b.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: write to chromium: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, r.Error.Message, r.Error.Code)
		}
		if result != nil {
			return json.Unmarshal(r.Result, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	case <-b.done:
		return fmt.Errorf("%s: chromium went away (%v)", method, b.readErr)
	}
}

// page is one tab, attached in flat session mode.
type page struct {
	t       *testing.T
	b       *browser
	session string
}

func (b *browser) newPage(t *testing.T) *page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserStartTimeout)
	defer cancel()
	var target struct{ TargetID string }
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		t.Fatalf("chromium did not open a page: %v\nchromium output:\n%s", err, b.log.tail(8<<10))
	}
	var att struct{ SessionID string }
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	p := &page{t: t, b: b, session: att.SessionID}
	p.do("Page.bringToFront", nil, nil)
	p.do("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": false}, nil)
	return p
}

// do runs one page command within a step's time limit.
func (p *page) do(method string, params, result any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserStepTimeout)
	defer cancel()
	if err := p.b.call(ctx, p.session, method, params, result); err != nil {
		p.fatalf("%v", err)
	}
}

// evaluate runs a JavaScript expression in the page and decodes its value.
func (p *page) evaluate(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	switch {
	case err != nil:
		return err
	case res.ExceptionDetails != nil:
		return fmt.Errorf("%s %s in %s", res.ExceptionDetails.Text, res.ExceptionDetails.Exception.Description, expr)
	case out != nil && res.Result.Value != nil:
		return json.Unmarshal(res.Result.Value, out)
	case out != nil:
		return errors.New("no value from " + expr)
	}
	return nil
}

func (p *page) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserStepTimeout)
	defer cancel()
	if err := p.evaluate(ctx, expr, out); err != nil {
		p.fatalf("%v", err)
	}
}

func (p *page) navigate(url string) {
	p.t.Helper()
	var nav struct{ ErrorText string }
	p.do("Page.navigate", map[string]any{"url": url}, &nav)
	if nav.ErrorText != "" {
		p.fatalf("navigate to %s: %s", url, nav.ErrorText)
	}
}

// waitFor waits, up to a step's time limit, until the JavaScript condition
// holds in a fully loaded document. The page itself re-tests the condition
// every few milliseconds for up to a second per round (as Playwright's
// waitForFunction does); a navigation in between destroys the round's
// context and just starts another.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserStepTimeout)
	defer cancel()
	expr := `new Promise(resolve => {
		const test = () => { try { return document.readyState === 'complete' && !!(` + cond + `); } catch (e) { return false; } };
		const start = performance.now();
		const tick = () => test() ? resolve(true) : performance.now() - start > 1000 ? resolve(false) : setTimeout(tick, 10);
		tick();
	})`
	var last error
	for {
		var ok bool
		err := p.evaluate(ctx, expr, &ok)
		if err == nil && ok {
			return
		}
		if ctx.Err() == nil || last == nil {
			last = err // keep the last answer the browser gave, not the deadline
		}
		if ctx.Err() != nil {
			p.fatalf("waiting for %s: not reached within %v (last: %v)", what, browserStepTimeout, last)
		}
	}
}

// setValue sets a form field's value as a user's choice would, with the
// input and change events.
func (p *page) setValue(sel, value string) {
	p.t.Helper()
	var res string
	p.eval(`(() => { const el = document.querySelector(`+jsString(sel)+`); if (!el) return 'no element';
		el.value = `+jsString(value)+`; el.dispatchEvent(new Event('input', {bubbles: true}));
		el.dispatchEvent(new Event('change', {bubbles: true}));
		return el.value === `+jsString(value)+` ? '' : 'value not taken (no such option?)'; })()`, &res)
	if res != "" {
		p.fatalf("set %s to %q: %s", sel, value, res)
	}
}

// typeInto focuses a text field, selects its content and types text over it
// (Input.insertText, as an IME would).
func (p *page) typeInto(sel, text string) {
	p.t.Helper()
	var found bool
	p.eval(`(() => { const el = document.querySelector(`+jsString(sel)+`); if (!el) return false; el.focus(); el.select(); return true; })()`, &found)
	if !found {
		p.fatalf("no element %s to type into", sel)
	}
	p.do("Input.insertText", map[string]any{"text": text}, nil)
}

// click presses and releases the left mouse button over the element's
// centre, after scrolling it into view: a real click, which a hidden or
// covered button would not receive.
func (p *page) click(sel string) {
	p.t.Helper()
	var pt struct {
		X, Y float64
		Err  string
	}
	p.eval(`(() => { const el = document.querySelector(`+jsString(sel)+`); if (!el) return {err: 'no element'};
		if (el.disabled) return {err: 'disabled'};
		el.scrollIntoView({block: 'center', inline: 'center'}); const r = el.getBoundingClientRect();
		if (r.width === 0 || r.height === 0) return {err: 'not visible'};
		const x = r.left + r.width / 2, y = r.top + r.height / 2;
		const hit = document.elementFromPoint(x, y);
		if (hit !== el && !el.contains(hit)) return {err: 'covered by ' + (hit ? hit.outerHTML.slice(0, 80) : 'nothing')};
		return {x, y}; })()`, &pt)
	if pt.Err != "" {
		p.fatalf("click %s: %s", sel, pt.Err)
	}
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		p.do("Input.dispatchMouseEvent", map[string]any{"type": typ, "x": pt.X, "y": pt.Y, "button": "left", "clickCount": 1}, nil)
	}
}

// submit clicks a form's button and waits for the next document, in which
// cond must hold. The current document is marked first, so a condition
// that already held before the click cannot pass early.
func (p *page) submit(what, button, cond string) {
	p.t.Helper()
	p.eval(`document.documentElement.dataset.reviewTestOld = '1'`, nil)
	p.click(button)
	p.waitFor(what, `document.documentElement.dataset.reviewTestOld === undefined && (`+cond+`)`)
}

// screenshot writes a PNG of the whole page, beyond the viewport.
func (p *page) screenshot(path string) {
	p.t.Helper()
	var m struct {
		CSSContentSize struct{ Width, Height float64 } `json:"cssContentSize"`
	}
	p.do("Page.getLayoutMetrics", nil, &m)
	var shot struct{ Data string }
	p.do("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": m.CSSContentSize.Width, "height": m.CSSContentSize.Height, "scale": 1}}, &shot)
	b, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// fatalf fails the test with what the page showed at that moment: its
// text, and a screenshot beside the artifacts.
func (p *page) fatalf(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(context.Background(), browserStepTimeout)
	defer cancel()
	var text string
	if err := p.evaluate(ctx, `location.href + '\n' + (document.body ? document.body.innerText : '')`, &text); err == nil {
		if len(text) > 4000 {
			text = text[:4000] + "…"
		}
		msg += "\npage text:\n" + text
	}
	var shot struct{ Data string }
	if err := p.b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &shot); err == nil {
		if b, err := base64.StdEncoding.DecodeString(shot.Data); err == nil {
			path := filepath.Join(artifactsDir(p.t), "review-page-failure.png")
			if os.WriteFile(path, b, 0o644) == nil {
				msg += "\nscreenshot at failure: " + path
			}
		}
	}
	p.t.Fatal(msg)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
