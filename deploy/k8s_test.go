package deploy_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	k8sDir      = "k8s"
	baseDir     = "k8s/base"
	overlaysDir = "k8s/overlays"

	// hpaCPUPercent is the HPA's CPU target and, as a fraction of the
	// limit, the EdgecacheHighCPU alert's threshold (observability_test.go).
	hpaCPUPercent = 85
	// inFlightMetric is the HPA's Pods metric, served by prometheus-adapter.
	inFlightMetric = "edgecache_requests_in_flight"
	// secretName holds the tenant secret, admin tokens and upstream key
	// (deploy/README.md tells how to create it).
	secretName = "edgecache-secrets"
)

// decoder decodes Kubernetes manifests into the typed API objects of the
// kinds edgecache deploys, strictly: an unknown or duplicate field, an
// unknown kind or apiVersion is an error.
func decoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme,
		monitoringv1.AddToScheme, // ServiceMonitor, PrometheusRule (k8s/monitoring)
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

func decode(t *testing.T, dec runtime.Decoder, where string, doc []byte) runtime.Object {
	t.Helper()
	obj, gvk, err := dec.Decode(doc, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	meta, ok := obj.(metav1.Object)
	if !ok || meta.GetName() == "" {
		t.Fatalf("%s: %s without metadata.name", where, gvk)
	}
	return obj
}

// TestManifestsDecodeStrictly decodes every YAML document under deploy/k8s
// (base, overlays and their patches, the prometheus-adapter example) except
// the kustomization files.
func TestManifestsDecodeStrictly(t *testing.T) {
	dec := decoder()
	n := 0
	for _, f := range yamlFiles(t, k8sDir) {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		docs := yamlDocs(t, f)
		if len(docs) == 0 {
			t.Errorf("%s: no documents", f)
		}
		for i, doc := range docs {
			decode(t, dec, fmt.Sprintf("%s (document %d)", f, i+1), doc)
			n++
		}
	}
	t.Logf("%d manifests decoded", n)
}

// TestStrictDecodingRejectsUnknownFields proves the decoder above is strict.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	_, _, err := decoder().Decode([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "selectr") {
		t.Fatalf("a misspelt field decoded: err = %v", err)
	}
	_, _, err = decoder().Decode([]byte("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n"), nil, nil)
	if err == nil {
		t.Fatal("an unknown kind decoded")
	}
}

// kustomization is the part of kustomize's format the manifests use.
// Decoding is strict: a field not listed here fails the test, because
// render below would silently ignore it. Teach render the field first.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

func loadKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	var k kustomization
	strictYAML(t, filepath.Join(dir, "kustomization.yaml"), &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("%s: apiVersion/kind = %s/%s", dir, k.APIVersion, k.Kind)
	}
	return k
}

// TestKustomizations checks every kustomization's references: resources and
// patches exist, every YAML file beside it is used, overlays build on the
// base.
func TestKustomizations(t *testing.T) {
	for _, f := range yamlFiles(t, k8sDir) {
		if filepath.Base(f) != "kustomization.yaml" {
			continue
		}
		dir := filepath.Dir(f)
		k := loadKustomization(t, dir)
		used := map[string]bool{"kustomization.yaml": true}
		for _, r := range k.Resources {
			p := filepath.Join(dir, r)
			st, err := os.Stat(p)
			switch {
			case err != nil:
				t.Errorf("%s: resource %s: %v", f, r, err)
			case st.IsDir() && !exists(filepath.Join(p, "kustomization.yaml")):
				t.Errorf("%s: resource %s is a directory without kustomization.yaml", f, r)
			}
			used[filepath.Clean(r)] = true
		}
		for _, p := range k.Patches {
			if p.Path == "" || !exists(filepath.Join(dir, p.Path)) {
				t.Errorf("%s: patch %q does not exist (only path patches are supported)", f, p.Path)
			}
			used[filepath.Clean(p.Path)] = true
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") && !used[e.Name()] {
				t.Errorf("%s: %s is not referenced (a forgotten resource or patch?)", f, e.Name())
			}
		}
		if strings.HasPrefix(filepath.ToSlash(dir), overlaysDir+"/") {
			if !slices.Contains(k.Resources, "../../base") {
				t.Errorf("%s: an overlay must build on ../../base; resources = %v", f, k.Resources)
			}
			if k.Namespace == "" {
				t.Errorf("%s: an overlay must set the namespace", f)
			}
		}
	}
}

// render builds a kustomization the way kustomize does, for the fields in
// kustomization: resources (files and directories), strategic-merge patches
// by path, images and namespace. It returns the objects as generic maps.
func render(t *testing.T, dir string) []map[string]any {
	t.Helper()
	k := loadKustomization(t, dir)
	var objs []map[string]any
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			objs = append(objs, render(t, p)...)
			continue
		}
		for i, doc := range yamlDocs(t, p) {
			objs = append(objs, yamlMap(t, fmt.Sprintf("%s (document %d)", p, i+1), doc))
		}
	}
	for _, pt := range k.Patches {
		p := filepath.Join(dir, pt.Path)
		for i, doc := range yamlDocs(t, p) {
			patch := yamlMap(t, fmt.Sprintf("%s (document %d)", p, i+1), doc)
			var targets []map[string]any
			for _, o := range objs {
				if sameObject(o, patch) {
					targets = append(targets, o)
				}
			}
			if len(targets) != 1 {
				t.Fatalf("%s: patch %s %s matches %d objects, want 1", dir, kindOf(patch), nameOf(patch), len(targets))
			}
			mergePatch(targets[0], patch)
		}
	}
	for _, img := range k.Images {
		for _, o := range objs {
			for _, c := range containersOf(o) {
				name, _ := c["image"].(string)
				if imageName(name) != img.Name {
					continue
				}
				n := img.Name
				if img.NewName != "" {
					n = img.NewName
				}
				switch {
				case img.Digest != "":
					n += "@" + img.Digest
				case img.NewTag != "":
					n += ":" + img.NewTag
				}
				c["image"] = n
			}
		}
	}
	if k.Namespace != "" {
		for _, o := range objs {
			if kindOf(o) != "Namespace" {
				meta(o)["namespace"] = k.Namespace
			}
		}
	}
	return objs
}

func kindOf(o map[string]any) string { s, _ := o["kind"].(string); return s }

func meta(o map[string]any) map[string]any {
	m, _ := o["metadata"].(map[string]any)
	if m == nil {
		m = map[string]any{}
		o["metadata"] = m
	}
	return m
}

func nameOf(o map[string]any) string { s, _ := meta(o)["name"].(string); return s }

func groupOf(o map[string]any) string {
	av, _ := o["apiVersion"].(string)
	g, _, _ := strings.Cut(av, "/")
	if !strings.Contains(av, "/") {
		return ""
	}
	return g
}

// sameObject reports whether a patch targets o: same group, kind and name.
func sameObject(o, patch map[string]any) bool {
	return groupOf(o) == groupOf(patch) && kindOf(o) == kindOf(patch) && nameOf(o) == nameOf(patch)
}

func imageName(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

func containersOf(o map[string]any) []map[string]any {
	spec, _ := o["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	podSpec, _ := tmpl["spec"].(map[string]any)
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		list, _ := podSpec[key].([]any)
		for _, c := range list {
			if m, ok := c.(map[string]any); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

// mergeKeys are the strategic-merge-patch keys of the lists the manifests
// patch (k8s.io/api's patchMergeKey tags). Other lists are replaced.
var mergeKeys = map[string][]string{
	"containers":       {"name"},
	"initContainers":   {"name"},
	"env":              {"name"},
	"volumes":          {"name"},
	"volumeMounts":     {"mountPath"},
	"ports":            {"containerPort", "port"}, // container ports, service ports
	"imagePullSecrets": {"name"},
}

// mergePatch applies a strategic-merge patch: maps merge key by key, lists
// with a merge key merge item by item, everything else is replaced.
func mergePatch(dst, patch map[string]any) {
	for k, pv := range patch {
		switch p := pv.(type) {
		case map[string]any:
			if d, ok := dst[k].(map[string]any); ok {
				mergePatch(d, p)
				continue
			}
		case []any:
			if d, ok := dst[k].([]any); ok {
				if key := listMergeKey(k, d, p); key != "" {
					dst[k] = mergeList(d, p, key)
					continue
				}
			}
		}
		dst[k] = pv
	}
}

func listMergeKey(field string, lists ...[]any) string {
	for _, key := range mergeKeys[field] {
		all := true
		for _, l := range lists {
			for _, item := range l {
				m, ok := item.(map[string]any)
				if !ok || m[key] == nil {
					all = false
				}
			}
		}
		if all {
			return key
		}
	}
	return ""
}

func mergeList(dst, patch []any, key string) []any {
	// kustomize puts the patch's items first, in the patch's order, then the
	// items it did not name: an env var patched in moves to the top, which
	// matters for $(VAR) references (checked in checkEdge).
	out := make([]any, 0, len(dst)+len(patch))
	done := map[string]bool{}
	for _, pi := range patch {
		p := pi.(map[string]any)
		k := fmt.Sprint(p[key])
		done[k] = true
		i := slices.IndexFunc(dst, func(di any) bool { return fmt.Sprint(di.(map[string]any)[key]) == k })
		if i < 0 {
			out = append(out, p)
			continue
		}
		mergePatch(dst[i].(map[string]any), p)
		out = append(out, dst[i])
	}
	for _, di := range dst {
		if !done[fmt.Sprint(di.(map[string]any)[key])] {
			out = append(out, di)
		}
	}
	return out
}

// TestRenderMatchesKustomizeSemantics pins the renderer's list handling to
// what kustomize (v5) does.
func TestRenderMatchesKustomizeSemantics(t *testing.T) {
	dst := map[string]any{"env": []any{
		map[string]any{"name": "A", "value": "1"},
		map[string]any{"name": "B", "value": "2"},
	}, "args": []any{"x"}}
	mergePatch(dst, map[string]any{"env": []any{
		map[string]any{"name": "B", "value": "3"},
		map[string]any{"name": "C", "value": "4"},
	}, "args": []any{"y"}})
	got, _ := json.Marshal(dst)
	want := `{"args":["y"],"env":[{"name":"B","value":"3"},{"name":"C","value":"4"},{"name":"A","value":"1"}]}`
	if string(got) != want {
		t.Fatalf("merge = %s, want %s", got, want)
	}
}

// edge is one rendered kustomization, decoded into typed objects.
type edge struct {
	name       string
	region     string // "" for the base
	namespaces []*corev1.Namespace
	deploy     *appsv1.Deployment
	config     *corev1.ConfigMap
	services   map[string]*corev1.Service
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	pdb        *policyv1.PodDisruptionBudget
	accounts   map[string]*corev1.ServiceAccount
	monitor    *monitoringv1.ServiceMonitor
	rules      *monitoringv1.PrometheusRule
	all        []runtime.Object
}

func renderEdge(t *testing.T, dir, region string) *edge {
	t.Helper()
	dec := decoder()
	e := &edge{name: dir, region: region, services: map[string]*corev1.Service{}, accounts: map[string]*corev1.ServiceAccount{}}
	for _, o := range render(t, dir) {
		j, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		obj := decode(t, dec, fmt.Sprintf("%s: rendered %s %s", dir, kindOf(o), nameOf(o)), j)
		e.all = append(e.all, obj)
		dup := func(what string) { t.Fatalf("%s: more than one %s", dir, what) }
		switch v := obj.(type) {
		case *corev1.Namespace:
			e.namespaces = append(e.namespaces, v)
		case *appsv1.Deployment:
			if e.deploy != nil {
				dup("Deployment")
			}
			e.deploy = v
		case *corev1.ConfigMap:
			if e.config != nil {
				dup("ConfigMap")
			}
			e.config = v
		case *corev1.Service:
			e.services[v.Name] = v
		case *autoscalingv2.HorizontalPodAutoscaler:
			if e.hpa != nil {
				dup("HorizontalPodAutoscaler")
			}
			e.hpa = v
		case *policyv1.PodDisruptionBudget:
			if e.pdb != nil {
				dup("PodDisruptionBudget")
			}
			e.pdb = v
		case *corev1.ServiceAccount:
			e.accounts[v.Name] = v
		case *monitoringv1.ServiceMonitor:
			if e.monitor != nil {
				dup("ServiceMonitor")
			}
			e.monitor = v
		case *monitoringv1.PrometheusRule:
			if e.rules != nil {
				dup("PrometheusRule")
			}
			e.rules = v
		default:
			t.Fatalf("%s: unexpected %T", dir, obj)
		}
	}
	if e.deploy == nil || e.config == nil || e.hpa == nil || e.pdb == nil || len(e.services) == 0 {
		t.Fatalf("%s: want a Deployment, ConfigMap, Service, HorizontalPodAutoscaler and PodDisruptionBudget", dir)
	}
	return e
}

// TestRegionalEdges renders the base and every overlay and checks that the
// pieces fit: selectors, ports, probes, config mount, writable paths,
// resources, security, HPA and PDB; overlays also set their region, model,
// Redis and namespace.
func TestRegionalEdges(t *testing.T) {
	t.Run("base", func(t *testing.T) { checkEdge(t, renderEdge(t, baseDir, "")) })
	entries, err := os.ReadDir(overlaysDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range entries {
		if !d.IsDir() {
			continue
		}
		n++
		t.Run(d.Name(), func(t *testing.T) {
			checkEdge(t, renderEdge(t, filepath.Join(overlaysDir, d.Name()), d.Name()))
		})
	}
	if n < 2 {
		t.Errorf("%d region overlays, want at least 2", n)
	}
}

func checkEdge(t *testing.T, e *edge) {
	if e.region != "" {
		checkMonitoring(t, e)
	}
	d := e.deploy
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)

	// Selectors.
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment selector %v does not match its pod labels %v (%v)", d.Spec.Selector, pod.Labels, err)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas (%d): the HPA owns the count", *d.Spec.Replicas)
	}
	if sa := pod.Spec.ServiceAccountName; sa != "" && e.accounts[sa] == nil {
		t.Errorf("service account %q is not deployed", sa)
	}

	// The container.
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if c.Name != "edgecache" {
		t.Errorf("container %q: the alerts and dashboard select container=\"edgecache\"", c.Name)
	}
	if imageName(c.Image) == c.Image || strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("image %q: want a pinned tag or digest", c.Image)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != 8080 || ports["admin"] != 9090 {
		t.Errorf("container ports = %v, want http 8080 and admin 9090", ports)
	}

	// Environment: literal values, and references only to earlier variables.
	env := map[string]string{}
	secretRefs := map[string]bool{}
	for _, v := range c.Env {
		if _, dup := env[v.Name]; dup {
			t.Errorf("env %s set twice", v.Name)
		}
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(v.Value, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("env %s refers to $(%s), which is not defined before it", v.Name, m[1])
			}
		}
		env[v.Name] = v.Value
		if v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil {
			if v.ValueFrom.SecretKeyRef.Name != secretName {
				t.Errorf("env %s reads Secret %q, want %q (deploy/README.md)", v.Name, v.ValueFrom.SecretKeyRef.Name, secretName)
			}
			secretRefs[v.Name] = true
		}
	}
	for _, name := range []string{"EDGECACHE_TENANT_SECRET", "EDGECACHE_ADMIN_TOKENS", "EDGECACHE_UPSTREAM_API_KEY",
		"EDGECACHE_REDIS_PASSWORD", "EDGECACHE_QDRANT_API_KEY", "EDGECACHE_EMBED_API_KEY"} {
		if !secretRefs[name] {
			t.Errorf("%s must come from the Secret %s", name, secretName)
		}
	}
	// No secret is ever a literal in a manifest (it would end up in git).
	secretish := regexp.MustCompile(`_(API_KEY|PASSWORD|USERNAME|TOKENS|SECRET|KEYS)(_FILE)?$`)
	for _, v := range c.Env {
		if secretish.MatchString(v.Name) && !strings.HasSuffix(v.Name, "_FILE") && !secretRefs[v.Name] {
			t.Errorf("env %s is a secret: set it from the Secret %s (secretKeyRef), not a literal", v.Name, secretName)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName != secretName {
			t.Errorf("volume %s mounts Secret %q, want %q", v.Name, v.Secret.SecretName, secretName)
		}
	}
	host, port, err := net.SplitHostPort(env["EDGECACHE_ADMIN_LISTEN"])
	if err != nil || host != "0.0.0.0" || port != strconv.Itoa(int(ports["admin"])) {
		t.Errorf("EDGECACHE_ADMIN_LISTEN = %q: probes and Prometheus need 0.0.0.0:%d", env["EDGECACHE_ADMIN_LISTEN"], ports["admin"])
	}
	if a := pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(ports["admin"])) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations = %v, want the admin port's /metrics", a)
	}

	// Probes on the admin port (a startup probe is optional).
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}, {"startup", c.StartupProbe, "/healthz"}} {
		if p.probe == nil && p.name == "startup" {
			continue
		}
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromString("admin") {
			t.Errorf("%s probe = %s on %s, want %s on the admin port", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// Resources: limits set, CPU request = limit so the HPA's 85 % of the
	// request is the alert's 85 % of the limit; GOMEMLIMIT under the limit.
	lim, req := c.Resources.Limits, c.Resources.Requests
	if lim.Cpu().IsZero() || lim.Memory().IsZero() {
		t.Errorf("limits = %v: want cpu and memory", lim)
	}
	if req.Cpu().Cmp(*lim.Cpu()) != 0 {
		t.Errorf("cpu request %s != limit %s: the HPA (85 %% of the request) and the alert (85 %% of the limit) would disagree", req.Cpu(), lim.Cpu())
	}
	if g := env["GOMEMLIMIT"]; g != "" {
		q, err := resource.ParseQuantity(strings.TrimSuffix(g, "B"))
		if err != nil || q.Cmp(*lim.Memory()) >= 0 {
			t.Errorf("GOMEMLIMIT %q: want a size under the memory limit %s (%v)", g, lim.Memory(), err)
		}
	}

	// Security: non-root, read-only root, no privilege escalation, no capabilities.
	sc, psc := c.SecurityContext, pod.Spec.SecurityContext
	switch {
	case sc == nil || psc == nil:
		t.Error("want pod and container security contexts")
	case !ptrTrue(sc.RunAsNonRoot) && !ptrTrue(psc.RunAsNonRoot):
		t.Error("runAsNonRoot is not set")
	case !ptrTrue(sc.ReadOnlyRootFilesystem):
		t.Error("readOnlyRootFilesystem is not set")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation must be false")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Error("capabilities must drop ALL")
	}

	// Volumes: every mount has a volume; the config file is the ConfigMap's
	// key; the journal and snapshot paths lie on a writable emptyDir.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	writable := map[string]bool{} // mount path → writable emptyDir
	configPath, configMounted := env["EDGECACHE_CONFIG"], false
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("volume mount %s: no volume %q", m.MountPath, m.Name)
			continue
		}
		writable[m.MountPath] = v.EmptyDir != nil && !m.ReadOnly
		if v.ConfigMap != nil && v.ConfigMap.Name != e.config.Name {
			t.Errorf("volume %s mounts ConfigMap %q, the deployed one is %q", m.Name, v.ConfigMap.Name, e.config.Name)
		}
		if v.ConfigMap != nil && path.Dir(configPath) == m.MountPath {
			configMounted = true
			if _, ok := e.config.Data[path.Base(configPath)]; !ok {
				t.Errorf("EDGECACHE_CONFIG %s: ConfigMap %s has no key %s", configPath, e.config.Name, path.Base(configPath))
			}
		}
	}
	if !configMounted {
		t.Errorf("EDGECACHE_CONFIG %q is not a file of a mounted ConfigMap", configPath)
	}
	var cfg struct {
		Degrade struct {
			JournalDir string `json:"journal_dir"`
		} `json:"degrade"`
		Semantic struct {
			SnapshotPath string `json:"snapshot_path"`
		} `json:"semantic"`
		Admission struct {
			MaxInFlight  int64 `json:"max_in_flight"`
			MaxHeapBytes int64 `json:"max_heap_bytes"`
		} `json:"admission"`
	}
	for _, doc := range e.config.Data {
		if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
			t.Fatalf("ConfigMap %s: %v", e.config.Name, err)
		}
	}
	for what, p := range map[string]string{"degrade.journal_dir": cfg.Degrade.JournalDir, "semantic.snapshot_path": cfg.Semantic.SnapshotPath} {
		ok := false
		for mp, w := range writable {
			if w && strings.HasPrefix(p, mp+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s %q is not on a writable volume (the root file system is read-only)", what, p)
		}
	}

	// Services route to the pods' named ports.
	for _, name := range []string{"edgecache", "edgecache-admin"} {
		s := e.services[name]
		if s == nil {
			t.Errorf("no Service %s", name)
			continue
		}
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service %s selector %v does not match the pods %v", name, s.Spec.Selector, pod.Labels)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String || ports[p.TargetPort.StrVal] == 0 {
				t.Errorf("Service %s port %s: targetPort %s is not a named container port", name, p.Name, p.TargetPort.String())
			}
		}
	}

	// Load shedding starts above what the HPA scales on, and below what the
	// container may hold.
	if g := env["GOMEMLIMIT"]; g != "" && cfg.Admission.MaxHeapBytes > 0 {
		q := resource.MustParse(strings.TrimSuffix(g, "B"))
		if cfg.Admission.MaxHeapBytes >= q.Value() {
			t.Errorf("admission.max_heap_bytes %d: want it under GOMEMLIMIT %s, or the heap is shed only after the GC thrashes", cfg.Admission.MaxHeapBytes, g)
		}
	}

	// HPA: the Deployment, CPU at 85 %, requests in flight per pod.
	h := e.hpa
	if r := h.Spec.ScaleTargetRef; r.Kind != "Deployment" || r.Name != d.Name || r.APIVersion != "apps/v1" {
		t.Errorf("HPA scales %s %s (%s), want Deployment %s", r.Kind, r.Name, r.APIVersion, d.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		t.Errorf("HPA bounds %v..%d: want 2 <= min <= max", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	var cpu, inFlight bool
	for _, m := range h.Spec.Metrics {
		switch {
		case m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU:
			cpu = m.Resource.Target.Type == autoscalingv2.UtilizationMetricType &&
				m.Resource.Target.AverageUtilization != nil && *m.Resource.Target.AverageUtilization == hpaCPUPercent
		case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == inFlightMetric:
			inFlight = m.Pods.Target.Type == autoscalingv2.AverageValueMetricType &&
				m.Pods.Target.AverageValue != nil && m.Pods.Target.AverageValue.Sign() > 0
			// The batch lane is shed from 80 % of max_in_flight (default 4096).
			maxInFlight := cmp.Or(cfg.Admission.MaxInFlight, 4096)
			if inFlight && m.Pods.Target.AverageValue.Value() >= maxInFlight*8/10 {
				t.Errorf("HPA scales at %s in flight per pod, but shedding starts at %d (80 %% of admission.max_in_flight)",
					m.Pods.Target.AverageValue, maxInFlight*8/10)
			}
		}
	}
	if !cpu || !inFlight {
		t.Errorf("HPA metrics: cpu utilization %d %% = %v, pods %s average value = %v", hpaCPUPercent, cpu, inFlightMetric, inFlight)
	}

	// PDB: the same pods, and never blocks every eviction.
	p := e.pdb
	psel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil || psel.Empty() || !psel.Matches(podLabels) {
		t.Errorf("PDB selector %v does not match the pods %v", p.Spec.Selector, pod.Labels)
	}
	if mu := p.Spec.MaxUnavailable; mu == nil || (mu.Type == intstr.Int && mu.IntValue() < 1) {
		t.Errorf("PDB maxUnavailable = %v: want at least 1 so drains can proceed", mu)
	}

	if e.region == "" {
		return
	}

	// An overlay: its region, model, Redis, and a namespace for everything.
	if env["EDGECACHE_REGION"] != e.region {
		t.Errorf("EDGECACHE_REGION = %q, want the overlay's name %q", env["EDGECACHE_REGION"], e.region)
	}
	if pod.Labels["edgecache.io/region"] != e.region {
		t.Errorf("pod label edgecache.io/region = %q, want %q", pod.Labels["edgecache.io/region"], e.region)
	}
	if u, err := url.Parse(env["EDGECACHE_UPSTREAM_URL"]); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		t.Errorf("EDGECACHE_UPSTREAM_URL = %q: want the region's model API", env["EDGECACHE_UPSTREAM_URL"])
	}
	addrs := strings.Split(env["EDGECACHE_REDIS_ADDR"], ",")
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(strings.TrimSpace(a)); err != nil {
			t.Errorf("EDGECACHE_REDIS_ADDR %q: %v", env["EDGECACHE_REDIS_ADDR"], err)
		}
	}
	if q := env["EDGECACHE_QDRANT_ADDR"]; q != "" {
		if _, port, err := net.SplitHostPort(q); err != nil || port != "6334" {
			t.Errorf("EDGECACHE_QDRANT_ADDR = %q: want host:6334 (gRPC)", q)
		}
	}
	if len(e.namespaces) != 1 {
		t.Fatalf("%d Namespace objects, want 1", len(e.namespaces))
	}
	ns := e.namespaces[0].Name
	for _, o := range e.all {
		m := o.(metav1.Object)
		if _, isNS := o.(*corev1.Namespace); !isNS && m.GetNamespace() != ns {
			t.Errorf("%T %s is in namespace %q, want %q", o, m.GetName(), m.GetNamespace(), ns)
		}
	}
	if lvl := e.namespaces[0].Labels["pod-security.kubernetes.io/enforce"]; lvl != "restricted" {
		t.Errorf("namespace pod security = %q, want restricted", lvl)
	}
}

func ptrTrue(b *bool) bool { return b != nil && *b }

// TestPrometheusAdapterRule checks that the example adapter rule serves the
// metric the HPA asks for.
func TestPrometheusAdapterRule(t *testing.T) {
	dec := decoder()
	f := filepath.Join(k8sDir, "prometheus-adapter", "config.yaml")
	docs := yamlDocs(t, f)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", f, len(docs))
	}
	cm, ok := decode(t, dec, f, docs[0]).(*corev1.ConfigMap)
	if !ok {
		t.Fatalf("%s: want a ConfigMap", f)
	}
	var cfg struct {
		Rules []struct {
			SeriesQuery string `json:"seriesQuery"`
			Resources   struct {
				Overrides map[string]struct {
					Resource string `json:"resource"`
				} `json:"overrides"`
			} `json:"resources"`
			Name struct {
				Matches string `json:"matches"`
				As      string `json:"as"`
			} `json:"name"`
			MetricsQuery string `json:"metricsQuery"`
		} `json:"rules"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("%s: config.yaml: %v", f, err)
	}
	found := false
	for _, r := range cfg.Rules {
		if r.Name.As != inFlightMetric || !strings.HasPrefix(r.SeriesQuery, inFlightMetric) {
			continue
		}
		found = true
		if r.Resources.Overrides["pod"].Resource != "pod" || r.Resources.Overrides["namespace"].Resource != "namespace" {
			t.Errorf("rule for %s must map the pod and namespace labels", inFlightMetric)
		}
		if !strings.Contains(r.MetricsQuery, "<<.Series>>") || !strings.Contains(r.MetricsQuery, "<<.GroupBy>>") {
			t.Errorf("metricsQuery %q: want <<.Series>> grouped by <<.GroupBy>>", r.MetricsQuery)
		}
	}
	if !found {
		t.Errorf("%s: no rule serves %s", f, inFlightMetric)
	}
}

// checkMonitoring checks a region's Prometheus Operator objects: the
// ServiceMonitor scrapes /metrics on the admin port of a deployed Service
// that selects the pods, and the PrometheusRule holds exactly the groups of
// prometheus/alerts.yaml.
func checkMonitoring(t *testing.T, e *edge) {
	t.Helper()
	if e.monitor == nil || e.rules == nil {
		t.Errorf("%s: want a ServiceMonitor and a PrometheusRule (k8s/monitoring)", e.name)
		return
	}
	sm := e.monitor.Spec
	sel, err := metav1.LabelSelectorAsSelector(&sm.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("ServiceMonitor selector %v: %v", sm.Selector, err)
	}
	if len(sm.Endpoints) != 1 || sm.Endpoints[0].Port != "admin" || sm.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want port admin, path /metrics", sm.Endpoints)
	}
	scraped := 0
	for _, svc := range e.services {
		if !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Name == "admin" {
				scraped++
				if p.TargetPort.String() != "admin" || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(e.deploy.Spec.Template.Labels)) {
					t.Errorf("Service %s: port admin must reach the pods' admin port", svc.Name)
				}
			}
		}
	}
	if scraped != 1 {
		t.Errorf("ServiceMonitor selects %d Services with an admin port, want 1", scraped)
	}
	var file ruleFile
	strictYAML(t, alertsFile, &file)
	want, _ := json.Marshal(file.Groups)
	var got ruleFile
	b, _ := json.Marshal(e.rules.Spec)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if g, _ := json.Marshal(got.Groups); string(g) != string(want) {
		t.Errorf("PrometheusRule %s: groups differ from %s (copy them over):\n got %s\nwant %s", e.rules.Name, alertsFile, g, want)
	}
}
