package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	composeFile   = "compose.yaml"
	dockerfile    = "Dockerfile"
	collectorFile = "otel-collector.yaml"
	promFile      = "prometheus/prometheus.yml"
	repoRoot      = ".."
)

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Volumes     []string          `json:"volumes"`
	Configs     []struct {
		Source string `json:"source"`
		Target string `json:"target"`
	} `json:"configs"`
	DependsOn json.RawMessage `json:"depends_on"`
	Ports     []string        `json:"ports"`
}

type compose struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
	Configs  map[string]struct {
		Content string `json:"content"`
		File    string `json:"file"`
	} `json:"configs"`
}

// composeServiceKeys are the compose service attributes a service may use;
// anything else is most likely a typo that compose would reject.
var composeServiceKeys = strings.Fields(`build image command entrypoint environment env_file volumes
	configs secrets depends_on ports expose restart healthcheck read_only tmpfs cap_drop cap_add
	security_opt user working_dir labels networks deploy ulimits logging stop_grace_period
	stop_signal init profiles pull_policy hostname platform shm_size mem_limit cpus extra_hosts`)

func loadCompose(t *testing.T) compose {
	t.Helper()
	b := readFile(t, composeFile)
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	for k := range raw {
		if !strings.HasPrefix(k, "x-") && !slices.Contains([]string{"name", "services", "volumes", "configs", "networks", "secrets"}, k) {
			t.Errorf("%s: unknown top-level key %q", composeFile, k)
		}
	}
	services, _ := raw["services"].(map[string]any)
	for name, s := range services {
		m, _ := s.(map[string]any)
		for k := range m {
			if !slices.Contains(composeServiceKeys, k) {
				t.Errorf("%s: service %s: unknown key %q", composeFile, name, k)
			}
		}
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

// expand resolves compose's ${VAR:-default} and ${VAR-default} to their
// defaults and ${VAR} to "" (the values with no environment set).
func expand(s string) string {
	return regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}`).ReplaceAllString(s, "$3")
}

func dependsOn(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var m map[string]struct {
		Condition string `json:"condition"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: depends_on %s: %v", composeFile, raw, err)
	}
	for k, v := range m {
		if !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, v.Condition) {
			t.Errorf("%s: depends_on %s: condition %q", composeFile, k, v.Condition)
		}
		list = append(list, k)
	}
	return list
}

// mounts returns a service's bind mounts (host path relative to deploy/ →
// container path) and checks every volume exists.
func mounts(t *testing.T, c compose, name string) map[string]string {
	t.Helper()
	binds := map[string]string{}
	for _, v := range c.Services[name].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			t.Errorf("%s: service %s: volume %q: want source:target", composeFile, name, v)
			continue
		}
		src, dst := parts[0], parts[1]
		if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
			if !exists(src) {
				t.Errorf("%s: service %s mounts %s, which does not exist", composeFile, name, src)
			}
			binds[filepath.Clean(src)] = dst
			continue
		}
		if _, ok := c.Volumes[src]; !ok {
			t.Errorf("%s: service %s: volume %q is not declared", composeFile, name, src)
		}
	}
	return binds
}

// hostPath maps a container path of a service to the file in deploy/ that
// is mounted there ("" if none).
func hostPath(binds map[string]string, containerPath string) string {
	for src, dst := range binds {
		if containerPath == dst {
			return src
		}
		if rest, ok := strings.CutPrefix(containerPath, dst+"/"); ok {
			return filepath.Join(src, rest)
		}
	}
	return ""
}

func hostPort(t *testing.T, where, addr string) (string, string) {
	t.Helper()
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, addr, err)
	}
	return h, p
}

// TestCompose checks the compose file: the services are there, images are
// pinned, every file, volume, config and service it names exists, and the
// addresses the services use to reach each other agree.
func TestCompose(t *testing.T) {
	c := loadCompose(t)
	for _, s := range []string{"edgecache", "llmsim", "redis", "qdrant", "otel-collector", "prometheus", "grafana"} {
		if _, ok := c.Services[s]; !ok {
			t.Fatalf("%s: no service %s", composeFile, s)
		}
	}
	for name, s := range c.Services {
		where := fmt.Sprintf("%s: service %s", composeFile, name)
		if s.Image == "" || imageName(s.Image) == s.Image || strings.HasSuffix(s.Image, ":latest") {
			t.Errorf("%s: image %q: want a pinned tag", where, s.Image)
		}
		if b := s.Build; b != nil {
			if !exists(filepath.Join(b.Context, b.Dockerfile)) || filepath.Clean(filepath.Join(b.Context, b.Dockerfile)) != filepath.Clean(filepath.Join(repoRoot, "deploy", dockerfile)) {
				t.Errorf("%s: builds %s in %s, want deploy/Dockerfile from the repository root", where, b.Dockerfile, b.Context)
			}
		}
		for _, d := range dependsOn(t, s.DependsOn) {
			if _, ok := c.Services[d]; !ok {
				t.Errorf("%s: depends on unknown service %s", where, d)
			}
		}
		for _, cf := range s.Configs {
			if _, ok := c.Configs[cf.Source]; !ok || cf.Target == "" {
				t.Errorf("%s: config %q is not declared or has no target", where, cf.Source)
			}
		}
		mounts(t, c, name)
	}
	for name, cf := range c.Configs {
		if (cf.Content == "") == (cf.File == "") || cf.File != "" && !exists(cf.File) {
			t.Errorf("%s: config %s: want content or an existing file", composeFile, name)
		}
	}

	// The Qdrant server matches the one the conformance suite runs against.
	var qd compose
	looseYAML(t, "compose.qdrant.yaml", &qd)
	if got, want := c.Services["qdrant"].Image, qd.Services["qdrant"].Image; got != want {
		t.Errorf("%s: qdrant image %s, compose.qdrant.yaml has %s: keep them on one server line", composeFile, got, want)
	}

	// edgecache reaches llmsim, Redis, Qdrant and the collector by service name.
	env := c.Services["edgecache"].Environment
	llmsimListen := ""
	if args := c.Services["llmsim"].Command; len(args) > 1 && args[0] == "--listen" {
		llmsimListen = args[1]
	}
	if ep := c.Services["llmsim"].Entrypoint; len(ep) != 1 || ep[0] != "/usr/local/bin/llmsim" {
		t.Errorf("%s: llmsim entrypoint %v, want [/usr/local/bin/llmsim] (built by the Dockerfile)", composeFile, ep)
	}
	_, simPort := hostPort(t, "llmsim --listen", llmsimListen)
	for key, want := range map[string]struct{ service, port string }{
		"EDGECACHE_UPSTREAM_URL":      {"llmsim", simPort},
		"EDGECACHE_REDIS_ADDR":        {"redis", "6379"},
		"EDGECACHE_QDRANT_ADDR":       {"qdrant", "6334"},
		"OTEL_EXPORTER_OTLP_ENDPOINT": {"otel-collector", ""},
	} {
		h, p := hostPort(t, composeFile+": edgecache "+key, expand(env[key]))
		if h != want.service || want.port != "" && p != want.port {
			t.Errorf("%s: edgecache %s = %q, want %s:%s", composeFile, key, env[key], want.service, want.port)
		}
	}
	_, otlpPort := hostPort(t, "OTLP endpoint", expand(env["OTEL_EXPORTER_OTLP_ENDPOINT"]))
	col := loadCollector(t)
	if !slices.Contains(col.receiverPorts, otlpPort) {
		t.Errorf("%s: OTLP endpoint port %s is not a receiver port of %s (%v)", composeFile, otlpPort, collectorFile, col.receiverPorts)
	}

	// Prometheus: its rule file is the tested one, its targets are services,
	// and it presents the admin token edgecache was given.
	var prom struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			Authorization *struct {
				Type            string `json:"type"`
				CredentialsFile string `json:"credentials_file"`
			} `json:"authorization"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	looseYAML(t, promFile, &prom)
	promMounts := mounts(t, c, "prometheus")
	var promConfig string
	for _, a := range c.Services["prometheus"].Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			promConfig = v
		}
	}
	if hp := hostPath(promMounts, promConfig); filepath.Clean(hp) != filepath.Clean(promFile) {
		t.Errorf("%s: prometheus --config.file=%s is %q on the host, want %s", composeFile, promConfig, hp, promFile)
	}
	if len(prom.RuleFiles) == 0 || filepath.Clean(hostPath(promMounts, prom.RuleFiles[0])) != filepath.Clean(alertsFile) {
		t.Errorf("%s: rule_files %v must load %s", promFile, prom.RuleFiles, alertsFile)
	}
	jobs := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		jobs[sc.JobName] = true
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				h, p := hostPort(t, promFile+": job "+sc.JobName, target)
				if _, ok := c.Services[h]; !ok && h != "localhost" {
					t.Errorf("%s: job %s scrapes %s, which is not a compose service", promFile, sc.JobName, target)
				}
				switch h {
				case "edgecache":
					if p != "9090" {
						t.Errorf("%s: edgecache target %s: want the admin port 9090", promFile, target)
					}
				case "otel-collector":
					if p != col.prometheusPort {
						t.Errorf("%s: collector target %s: its prometheus exporter listens on %s", promFile, target, col.prometheusPort)
					}
				}
			}
		}
		if sc.JobName == "edgecache" {
			tokens := expand(env["EDGECACHE_ADMIN_TOKENS"])
			var mounted string
			for _, cf := range c.Services["prometheus"].Configs {
				if sc.Authorization != nil && cf.Target == sc.Authorization.CredentialsFile {
					mounted = expand(c.Configs[cf.Source].Content)
				}
			}
			if mounted == "" || !slices.Contains(strings.Split(tokens, ","), "prometheus:"+mounted) {
				t.Errorf("%s: the edgecache job's credentials file must hold the token of \"prometheus\" in EDGECACHE_ADMIN_TOKENS (%q)", promFile, tokens)
			}
		}
	}
	for _, j := range []string{"edgecache", "otel-collector"} {
		if !jobs[j] {
			t.Errorf("%s: no %s job", promFile, j)
		}
	}

	// Grafana: the datasource points at the prometheus service, the
	// dashboard provider reads the mounted dashboards directory.
	grafanaMounts := mounts(t, c, "grafana")
	if hp := hostPath(grafanaMounts, "/etc/grafana/provisioning"); filepath.Clean(hp) != filepath.Join("grafana", "provisioning") {
		t.Errorf("%s: grafana provisioning is %q, want grafana/provisioning", composeFile, hp)
	}
	var ds struct {
		Datasources []struct {
			URL string `json:"url"`
		} `json:"datasources"`
	}
	looseYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yaml"), &ds)
	for _, d := range ds.Datasources {
		if h, p := hostPort(t, "datasource url", d.URL); h != "prometheus" || p != "9090" {
			t.Errorf("grafana datasource %s: want http://prometheus:9090", d.URL)
		}
	}
	var prov struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name                  string `json:"name"`
			Folder                string `json:"folder"`
			Type                  string `json:"type"`
			DisableDeletion       bool   `json:"disableDeletion"`
			AllowUIUpdates        bool   `json:"allowUiUpdates"`
			UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `json:"path"`
				FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
			} `json:"options"`
		} `json:"providers"`
	}
	provFile := filepath.Join("grafana", "provisioning", "dashboards", "edgecache.yaml")
	strictYAML(t, provFile, &prov)
	if len(prov.Providers) != 1 || !exists(filepath.Join(hostPath(grafanaMounts, prov.Providers[0].Options.Path), filepath.Base(dashboardFile))) {
		t.Errorf("%s: the provider must read the directory holding %s", provFile, dashboardFile)
	}
	home := c.Services["grafana"].Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if home != "" && filepath.Clean(hostPath(grafanaMounts, home)) != filepath.Clean(dashboardFile) {
		t.Errorf("%s: home dashboard %s is not %s", composeFile, home, dashboardFile)
	}
}

type collector struct {
	receiverPorts  []string
	prometheusPort string
}

// loadCollector parses the collector configuration: every component a
// pipeline names is defined, every defined one is used, receivers listen on
// all interfaces (other containers send to them).
func loadCollector(t *testing.T) collector {
	t.Helper()
	var cfg struct {
		Receivers  map[string]map[string]any `json:"receivers"`
		Processors map[string]map[string]any `json:"processors"`
		Exporters  map[string]map[string]any `json:"exporters"`
		Extensions map[string]map[string]any `json:"extensions"`
		Connectors map[string]map[string]any `json:"connectors,omitempty"`
		Service    struct {
			Extensions []string       `json:"extensions"`
			Telemetry  map[string]any `json:"telemetry,omitempty"`
			Pipelines  map[string]struct {
				Receivers  []string `json:"receivers"`
				Processors []string `json:"processors"`
				Exporters  []string `json:"exporters"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	strictYAML(t, collectorFile, &cfg)
	used := map[string]bool{}
	check := func(kind string, defined map[string]map[string]any, names []string) {
		for _, n := range names {
			if _, ok := defined[n]; !ok {
				t.Errorf("%s: %s %q is used but not defined", collectorFile, kind, n)
			}
			used[kind+"/"+n] = true
		}
	}
	check("extension", cfg.Extensions, cfg.Service.Extensions)
	for name, p := range cfg.Service.Pipelines {
		signal, _, _ := strings.Cut(name, "/")
		if !slices.Contains([]string{"traces", "metrics", "logs"}, signal) {
			t.Errorf("%s: pipeline %q: want traces, metrics or logs", collectorFile, name)
		}
		if len(p.Receivers) == 0 || len(p.Exporters) == 0 {
			t.Errorf("%s: pipeline %s needs receivers and exporters", collectorFile, name)
		}
		check("receiver", cfg.Receivers, p.Receivers)
		check("processor", cfg.Processors, p.Processors)
		check("exporter", cfg.Exporters, p.Exporters)
	}
	for kind, defined := range map[string]map[string]map[string]any{"receiver": cfg.Receivers, "processor": cfg.Processors, "exporter": cfg.Exporters, "extension": cfg.Extensions} {
		for n := range defined {
			if !used[kind+"/"+n] {
				t.Errorf("%s: %s %q is defined but not used", collectorFile, kind, n)
			}
		}
	}
	var col collector
	otlp, _ := cfg.Receivers["otlp"]["protocols"].(map[string]any)
	for proto, v := range otlp {
		m, _ := v.(map[string]any)
		ep, _ := m["endpoint"].(string)
		h, p := hostPort(t, collectorFile+": otlp "+proto, ep)
		if h != "0.0.0.0" {
			t.Errorf("%s: otlp %s listens on %q: other containers cannot reach it", collectorFile, proto, ep)
		}
		col.receiverPorts = append(col.receiverPorts, p)
	}
	ep, _ := cfg.Exporters["prometheus"]["endpoint"].(string)
	_, col.prometheusPort = hostPort(t, collectorFile+": prometheus exporter", ep)
	return col
}

type dockerInstr struct {
	cmd, args string
}

type dockerStage struct {
	image, name string
	instrs      []dockerInstr
}

// parseDockerfile returns the global ARG defaults and the stages.
func parseDockerfile(t *testing.T) (map[string]string, []dockerStage) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, dockerfile)))
	var logical []string
	var cur strings.Builder
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" && cur.Len() == 0 {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	args := map[string]string{}
	var stages []dockerStage
	for _, l := range logical {
		cmd, rest, _ := strings.Cut(l, " ")
		cmd, rest = strings.ToUpper(cmd), strings.TrimSpace(rest)
		switch {
		case cmd == "FROM":
			f := strings.Fields(rest)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := dockerStage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && cmd == "ARG":
			k, v, _ := strings.Cut(rest, "=")
			args[k] = v
		case len(stages) == 0:
			t.Fatalf("%s: %s before the first FROM", dockerfile, cmd)
		default:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, dockerInstr{cmd, rest})
		}
	}
	return args, stages
}

// stageValues collects a stage's ARG defaults or ENV values (one
// KEY=value per instruction, the form the Dockerfile uses).
func stageValues(st dockerStage, cmd string) map[string]string {
	vals := map[string]string{}
	for _, in := range st.instrs {
		if in.cmd == cmd {
			k, v, _ := strings.Cut(in.args, "=")
			vals[k] = v
		}
	}
	return vals
}

// makeVar reads `NAME := value` from the repository's Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(\S+)\s*$`).FindSubmatch(readFile(t, filepath.Join(repoRoot, "Makefile")))
	if m == nil {
		t.Fatalf("Makefile: no %s", name)
	}
	return string(m[1])
}

// TestDockerfile checks the image: pinned bases; the model fetched and
// checked against the Makefile's package and sha256; both binaries built;
// a non-root final stage whose paths agree with its environment; nothing it
// copies left out of the build context.
func TestDockerfile(t *testing.T) {
	args, stages := parseDockerfile(t)
	names := map[string]dockerStage{}
	for _, st := range stages {
		img := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`).ReplaceAllStringFunc(st.image, func(v string) string {
			return args[strings.Trim(v, "${}")]
		})
		if imageName(img) == img || strings.HasSuffix(img, ":latest") || strings.HasSuffix(img, ":") {
			t.Errorf("%s: FROM %s (%s): want a pinned tag", dockerfile, st.image, img)
		}
		names[st.name] = st
	}
	model, build := names["model"], names["build"]
	final := stages[len(stages)-1]
	if model.image == "" || build.image == "" {
		t.Fatalf("%s: want stages model and build", dockerfile)
	}
	margs := stageValues(model, "ARG")
	if margs["MODEL_PKG"] != makeVar(t, "MODEL_PKG") || margs["MODEL_SHA256"] != makeVar(t, "MODEL_SHA256") {
		t.Errorf("%s: model %s sha256 %s, the Makefile has %s %s", dockerfile, margs["MODEL_PKG"], margs["MODEL_SHA256"], makeVar(t, "MODEL_PKG"), makeVar(t, "MODEL_SHA256"))
	}
	runs := func(st dockerStage) string {
		var b strings.Builder
		for _, in := range st.instrs {
			if in.cmd == "RUN" {
				b.WriteString(in.args + "\n")
			}
		}
		return b.String()
	}
	for _, want := range []string{`npm pack`, `"$MODEL_PKG"`, `$MODEL_SHA256`, `sha256sum -c`} {
		if !strings.Contains(runs(model), want) {
			t.Errorf("%s: the model stage does not run %s", dockerfile, want)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "go build", "./cmd/edgecache", "./cmd/llmsim"} {
		if !strings.Contains(runs(build), want) {
			t.Errorf("%s: the build stage does not run %s", dockerfile, want)
		}
	}

	env := stageValues(final, "ENV")
	var user, entrypoint string
	var exposed []string
	copies := map[string]string{} // destination → source (local sources as "./path")
	for _, in := range final.instrs {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "COPY":
			f := strings.Fields(in.args)
			from := ""
			f = slices.DeleteFunc(f, func(s string) bool {
				if v, ok := strings.CutPrefix(s, "--from="); ok {
					from = v
				}
				return strings.HasPrefix(s, "--")
			})
			dst := f[len(f)-1]
			for _, src := range f[:len(f)-1] {
				if from == "" {
					if !exists(filepath.Join(repoRoot, src)) {
						t.Errorf("%s: COPY %s: no such file in the build context", dockerfile, src)
					}
					checkNotIgnored(t, src)
					copies[dst] = "./" + src
				} else {
					if _, ok := names[from]; !ok {
						t.Errorf("%s: COPY --from=%s: no such stage", dockerfile, from)
					}
					copies[dst] = from + ":" + src
				}
			}
		}
	}
	for _, src := range []string{"go.mod", "go.sum", "cmd/edgecache", "cmd/llmsim"} {
		checkNotIgnored(t, src)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("%s: final stage runs as %q, want a non-root user", dockerfile, user)
	}
	if entrypoint != `["/usr/local/bin/edgecache"]` || !strings.HasPrefix(copies["/usr/local/bin/"], "build:") {
		t.Errorf("%s: ENTRYPOINT %s: want [\"/usr/local/bin/edgecache\"] copied from the build stage", dockerfile, entrypoint)
	}
	if !slices.Contains(exposed, "8080") || !slices.Contains(exposed, "9090") {
		t.Errorf("%s: EXPOSE %v, want 8080 and 9090", dockerfile, exposed)
	}
	if copies[env["EDGECACHE_MODEL_DIR"]] != "model:/out/use-lite" {
		t.Errorf("%s: EDGECACHE_MODEL_DIR %s does not hold the model stage's output", dockerfile, env["EDGECACHE_MODEL_DIR"])
	}
	if copies[env["EDGECACHE_CONFIG"]] != "./deploy/config.container.yaml" {
		t.Errorf("%s: EDGECACHE_CONFIG %s is not deploy/config.container.yaml", dockerfile, env["EDGECACHE_CONFIG"])
	}
	if env["EDGECACHE_ADMIN_LISTEN"] != "0.0.0.0:9090" {
		t.Errorf("%s: EDGECACHE_ADMIN_LISTEN = %q, want 0.0.0.0:9090", dockerfile, env["EDGECACHE_ADMIN_LISTEN"])
	}
	if !strings.HasPrefix(copies["/var/lib/edgecache"], "build:") {
		t.Errorf("%s: /var/lib/edgecache must be created (owned by the runtime user) from the build stage", dockerfile)
	}
}

// checkNotIgnored fails when Dockerfile.dockerignore keeps src (a path
// relative to the repository root) out of the build context.
func checkNotIgnored(t *testing.T, src string) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, dockerfile+".dockerignore")))
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") || strings.HasPrefix(p, "!") {
			continue
		}
		p = strings.Trim(p, "/")
		base := strings.TrimPrefix(p, "**/")
		matched, _ := path.Match(p, src)
		baseMatched, _ := path.Match(base, path.Base(src))
		if matched || src == p || strings.HasPrefix(src, p+"/") || strings.HasPrefix(p, "**/") && baseMatched {
			t.Errorf("%s.dockerignore: %q excludes %s, which the image needs", dockerfile, p, src)
		}
	}
}
