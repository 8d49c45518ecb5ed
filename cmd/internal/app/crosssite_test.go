//go:build linux

package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// Cross-site requests to the admin API (issue 12, item 3). The admin
// listener needs no token on loopback, so a page the operator visits must
// not be able to make the browser change anything there.

// victimBody is a cached answer of tenant sk-victim that a purge would
// make unreachable.
const victimBody = `{"model":"m","messages":[{"role":"user","content":"cached before the attack"}]}`

// adminState is what the state-changing admin calls would change.
type adminState struct {
	Generation, Version int64
	Mode                string
	Audit               int
	VictimHit           bool
}

func readAdminState(t *testing.T, data, admin string) adminState {
	t.Helper()
	var s adminState
	code, b := get(t, admin+"/admin/routes/chat", "")
	if code != 200 || json.Unmarshal(b, &s) != nil {
		t.Fatalf("/admin/routes/chat: %d %s", code, b)
	}
	var audit struct{ Count int }
	code, b = get(t, admin+"/admin/routes/audit?route=chat", "")
	if code != 200 || json.Unmarshal(b, &audit) != nil {
		t.Fatalf("/admin/routes/audit: %d %s", code, b)
	}
	s.Audit = audit.Count
	s.VictimHit = strings.Contains(postKey(t, data, "sk-victim", victimBody), "hit")
	return s
}

// cacheVictim stores the victim's answer and waits until it is a hit.
func cacheVictim(t *testing.T, data string) {
	t.Helper()
	postKey(t, data, "sk-victim", victimBody)
	waitUntil(t, func() bool { return strings.Contains(postKey(t, data, "sk-victim", victimBody), "hit") })
}

// adminCall is one state-changing admin request.
type adminCall struct{ method, path, ctype, body string }

var adminCalls = []adminCall{
	{"POST", "/admin/routes/chat/purge", "", ""},
	{"POST", "/admin/cache/purge", "application/json", `{"route":"chat"}`},
	{"POST", "/admin/cache/purge", "application/json", `{"api_key":"sk-victim"}`},
	{"PATCH", "/admin/routes/chat", "application/json", `{"mode":"off"}`},
	{"DELETE", "/admin/cache/" + strings.Repeat("ab", 32), "", ""},
}

func doAdminCall(t *testing.T, admin string, c adminCall, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, admin+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminRefusesCrossSiteRequests sends the admin API's state changes as
// curl would, with the headers a browser adds to a cross-site request, and
// with a body type a cross-site page can send: each is refused with 403
// and changes nothing. The same calls without those headers, or as a
// same-origin browser sends them, go through.
func TestAdminRefusesCrossSiteRequests(t *testing.T) {
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, admin := startEdgecache(t, sim.URL())
	cacheVictim(t, data)
	before := readAdminState(t, data, admin)
	if !before.VictimHit {
		t.Fatal("the victim's answer is not cached")
	}

	hostile := map[string]map[string]string{
		"foreign Origin":                  {"Origin": "https://evil.example"},
		"Origin null":                     {"Origin": "null"},
		"Origin of another port":          {"Origin": "http://127.0.0.1:1"},
		"Sec-Fetch-Site cross-site":       {"Sec-Fetch-Site": "cross-site"},
		"Sec-Fetch-Site same-site":        {"Sec-Fetch-Site": "same-site"},
		"cross-site with own Origin":      {"Sec-Fetch-Site": "cross-site", "Origin": admin},
		"same-origin with foreign Origin": {"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"},
		"text/plain":                      {"Content-Type": "text/plain"},
		"text/plain;charset=UTF-8":        {"Content-Type": "text/plain;charset=UTF-8"},
		"form urlencoded":                 {"Content-Type": "application/x-www-form-urlencoded"},
		"multipart form":                  {"Content-Type": "multipart/form-data; boundary=x"},
	}
	for name, h := range hostile {
		for _, c := range adminCalls {
			code, body := doAdminCall(t, admin, c, h)
			if code != http.StatusForbidden || !strings.Contains(body, `"code":"cross_site_request"`) && !strings.Contains(body, `"code":"content_type_refused"`) {
				t.Errorf("%s: %s %s: %d %s, want 403", name, c.method, c.path, code, body)
			}
		}
	}
	if after := readAdminState(t, data, admin); after != before {
		t.Fatalf("refused requests changed the admin state: %+v, was %+v", after, before)
	}

	// Reads stay open to a browser on another site (they change nothing).
	req, _ := http.NewRequest(http.MethodGet, admin+"/admin/routes/chat", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("a cross-site GET: %v %v, want 200", resp, err)
	} else {
		resp.Body.Close()
	}

	allowed := map[string]map[string]string{
		"curl":                     nil,
		"same-origin browser":      {"Sec-Fetch-Site": "same-origin", "Origin": admin},
		"browser, typed (none)":    {"Sec-Fetch-Site": "none"},
		"JSON with a charset":      {"Content-Type": "application/json; charset=utf-8"},
		"old browser, own Origin":  {"Origin": admin},
		"vendor JSON (+json) type": {"Content-Type": "application/merge-patch+json"},
	}
	for name, h := range allowed {
		for _, c := range adminCalls {
			if code, body := doAdminCall(t, admin, c, h); code != http.StatusOK {
				t.Errorf("%s: %s %s: %d %s, want 200", name, c.method, c.path, code, body)
			}
		}
	}
	after := readAdminState(t, data, admin)
	if after.Generation <= before.Generation || after.Mode != "off" || after.Audit <= before.Audit || after.VictimHit {
		t.Errorf("allowed requests did not take effect: %+v, was %+v", after, before)
	}
}

// TestAdminCrossSiteInChromium: a page from another site (and one from
// another port of the same host) tries, in headless Chromium, every way a
// page can send the admin API a state change without a CORS preflight —
// fetch in no-cors mode with no body type, text/plain, a Blob and form
// encoding, a CORS fetch with JSON, and form posts (text/plain and
// urlencoded) into an iframe — and nothing changes: no purge, no policy
// change, no audit record, the cached answer still served. The same page
// aimed at a recording server shows the browser does send those requests.
// Then the review page's own Purge button purges.
func TestAdminCrossSiteInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", llmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	data, admin := startEdgecache(t, sim.URL())
	cacheVictim(t, data)
	before := readAdminState(t, data, admin)

	// The recording server answers like the admin API: no CORS, OPTIONS
	// refused.
	type recorded struct{ Method, Path, Site, Origin, Type string }
	var mu sync.Mutex
	var got []recorded
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		got = append(got, recorded{r.Method, r.URL.Path, r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Origin"), r.Header.Get("Content-Type")})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{}`)
	}))
	defer rec.Close()

	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, attackPage)
	}))
	defer evil.Close()

	b := startBrowser(t, chromium)
	p := b.newPage(t)
	attack := func(pageURL, target string) map[string]string {
		t.Helper()
		p.navigate(pageURL)
		p.waitFor("the attack page", `typeof attack === 'function'`)
		var out map[string]string
		p.eval(`attack(`+jsString(target)+`)`, &out)
		return out
	}

	// Control: the requests leave the browser.
	cross := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1) + "/"
	out := attack(cross, rec.URL)
	mu.Lock()
	sent := append([]recorded(nil), got...)
	mu.Unlock()
	if len(sent) != 6 {
		t.Fatalf("the recording server got %d state changes %+v (page: %v); want the 6 a page can send without a preflight", len(sent), sent, out)
	}
	for _, r := range sent {
		if r.Site != "cross-site" || r.Origin == "" {
			t.Errorf("recorded %+v: want Sec-Fetch-Site cross-site with an Origin", r)
		}
	}

	for _, from := range []string{cross, evil.URL + "/"} {
		out := attack(from, admin)
		if after := readAdminState(t, data, admin); after != before {
			t.Fatalf("a page at %s changed the admin state: %+v, was %+v (page: %v)", from, after, before, out)
		}
	}

	// The review page (same origin) still purges.
	p.navigate(admin + "/admin/ui")
	p.waitFor("the review page", `!!document.querySelector('#form-chat button.purge')`)
	p.submit("the purge message", `#form-chat button.purge`,
		`(document.querySelector('#flash')?.textContent ?? '').includes('Route chat purged')`)
	after := readAdminState(t, data, admin)
	if after.Generation != before.Generation+1 || after.Audit != before.Audit+1 || after.VictimHit {
		t.Errorf("after the review page's purge: %+v, was %+v; want one more generation and audit record, the answer gone", after, before)
	}
}

// attackPage is a hostile page: attack(target) sends the admin API every
// state change a page can send cross-site without a preflight, plus one
// that needs one, and reports what the browser said.
const attackPage = `<!doctype html><meta charset="utf-8"><title>not the admin</title>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<script>
async function attack(t) {
  const out = {};
  const tryFetch = async (name, url, init) => {
    try { const r = await fetch(url, init); out[name] = r.type + ' ' + r.status; }
    catch (e) { out[name] = 'rejected: ' + e.message; }
  };
  await tryFetch('no-cors, no body', t + '/admin/routes/chat/purge', {method: 'POST', mode: 'no-cors'});
  await tryFetch('no-cors text/plain', t + '/admin/cache/purge', {method: 'POST', mode: 'no-cors',
    headers: {'Content-Type': 'text/plain'}, body: '{"route":"chat"}'});
  await tryFetch('no-cors blob', t + '/admin/cache/purge', {method: 'POST', mode: 'no-cors',
    body: new Blob(['{"api_key":"sk-victim"}'])});
  await tryFetch('no-cors form', t + '/admin/cache/purge', {method: 'POST', mode: 'no-cors',
    body: new URLSearchParams({route: 'chat'})});
  await tryFetch('cors json', t + '/admin/routes/chat', {method: 'PATCH',
    headers: {'Content-Type': 'application/json'}, body: '{"mode":"off"}'});
  const submit = (name, action, enctype, fields) => new Promise(resolve => {
    const f = document.createElement('form');
    f.method = 'POST'; f.action = action; f.enctype = enctype; f.target = name;
    for (const [k, v] of Object.entries(fields)) {
      const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
    }
    document.body.appendChild(f);
    const frame = document.querySelector('iframe[name="' + name + '"]');
    const timer = setTimeout(() => resolve('no load'), 5000);
    frame.addEventListener('load', () => { clearTimeout(timer); resolve('loaded'); }, {once: true});
    f.submit();
  });
  out['form text/plain'] = await submit('sink1', t + '/admin/cache/purge', 'text/plain', {'{"route":"chat","x":"': '"}'});
  out['form urlencoded'] = await submit('sink2', t + '/admin/routes/chat/purge', 'application/x-www-form-urlencoded', {route: 'chat'});
  return out;
}
</script>
`
