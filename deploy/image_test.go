package deploy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImage builds the image as `make image` does (deploy/image.sh, with
// buildah, no registry) twice, checks that the two archives are the same
// bytes, then unpacks its root file system and runs it: `edgecache
// version` says the stamped version, and `edgecache --sim` answers a chat
// request (inside a chroot as the image's user when the test runs as
// root, else from the unpacked binary).
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the image build takes a while")
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("buildah is not installed (make image-deps installs it): the image is not built")
	}
	tmp := t.TempDir()
	const version = "v0.0.0-imagetest"
	const epoch = "1700000000"
	build := func(out string) {
		t.Helper()
		cmd := exec.Command("./image.sh")
		cmd.Env = append(os.Environ(), "OUT="+out, "VERSION="+version, "SOURCE_DATE_EPOCH="+epoch,
			"BUILDAH_ROOT="+filepath.Join(tmp, "storage"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("deploy/image.sh: %v\n%s", err, b)
		}
	}
	a, b := filepath.Join(tmp, "a.tar"), filepath.Join(tmp, "b.tar")
	build(a)
	build(b)
	if sa, sb := fileSHA(t, a), fileSHA(t, b); sa != sb {
		t.Errorf("two builds differ: %s and %s (not reproducible)", sa, sb)
	}

	oci := filepath.Join(tmp, "oci")
	untar(t, a, oci, false)
	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readJSON(t, filepath.Join(oci, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json: %d manifests", len(index.Manifests))
	}
	var manifest struct {
		Config struct{ Digest string } `json:"config"`
		Layers []struct {
			MediaType, Digest string
		} `json:"layers"`
	}
	readJSON(t, blob(oci, index.Manifests[0].Digest), &manifest)
	var cfg struct {
		Created string `json:"created"`
		Config  struct {
			User       string
			Entrypoint []string
			Env        []string
			Labels     map[string]string
		} `json:"config"`
	}
	readJSON(t, blob(oci, manifest.Config.Digest), &cfg)
	if cfg.Config.User != "65534:65534" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/edgecache" {
		t.Errorf("image config: user %q entrypoint %q", cfg.Config.User, cfg.Config.Entrypoint)
	}
	if want := time.Unix(1700000000, 0).UTC().Format(time.RFC3339); !strings.HasPrefix(cfg.Created, strings.TrimSuffix(want, "Z")) {
		t.Errorf("created %q, want SOURCE_DATE_EPOCH %s", cfg.Created, want)
	}
	if cfg.Config.Labels["org.opencontainers.image.version"] != version {
		t.Errorf("labels = %v", cfg.Config.Labels)
	}

	rootfs := filepath.Join(tmp, "rootfs")
	for _, l := range manifest.Layers {
		untar(t, blob(oci, l.Digest), rootfs, strings.Contains(l.MediaType, "gzip"))
	}
	passwd := string(readFile(t, filepath.Join(rootfs, "etc/passwd")))
	if !strings.Contains(passwd, "nobody:x:65534:65534:") {
		t.Errorf("/etc/passwd has no nobody:\n%s", passwd)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt")); err != nil || fi.Size() < 1000 {
		t.Errorf("CA bundle: %v", err)
	}
	if exists(filepath.Join("..", "models", "use-lite", "model.json")) && !exists(filepath.Join(rootfs, "opt/edgecache/models/use-lite/model.json")) {
		t.Error("models/use-lite is present but not in the image")
	}

	bin := filepath.Join(rootfs, "usr/local/bin/edgecache")
	chroot := os.Geteuid() == 0
	if chroot {
		if _, err := exec.LookPath("chroot"); err != nil {
			chroot = false
		}
	}
	command := func(ctx context.Context, args ...string) *exec.Cmd {
		if chroot {
			cmd := exec.CommandContext(ctx, "chroot", append([]string{"--userspec=65534:65534", rootfs, "/usr/local/bin/edgecache"}, args...)...)
			cmd.Env = cfg.Config.Env // the image's environment, its config file and model
			return cmd
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = tmp
		cmd.Env = []string{"EDGECACHE_MODEL_DIR=" + filepath.Join(rootfs, "opt/edgecache/models/use-lite"),
			"EDGECACHE_JOURNAL_DIR=" + filepath.Join(tmp, "journal"),
			"SSL_CERT_FILE=" + filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt")}
		return cmd
	}
	out, err := command(context.Background(), "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "edgecache "+version {
		t.Errorf("edgecache version: %q %v, want %q", out, err, "edgecache "+version)
	}

	data, admin := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	srv := command(ctx, "serve", "--sim", "--listen", data, "--admin-listen", admin)
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = srv.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Post("http://"+data+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"sim-1","messages":[{"role":"user","content":"hello from the image"}]}`))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"chat.completion"`)) {
				t.Errorf("chat: %d %s", resp.StatusCode, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image's edgecache did not answer (chroot %v): %v\n%s", chroot, err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func blob(oci, digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(oci, "blobs", alg, hex)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// untar unpacks the tar (gzipped when gz) at path into dir: regular files,
// directories and symbolic links, keeping modes; whiteouts are skipped.
func untar(t *testing.T, path, dir string, gz bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	root := filepath.Clean(dir) + string(filepath.Separator)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if strings.HasPrefix(filepath.Base(h.Name), ".wh.") {
			continue
		}
		dst := filepath.Join(dir, h.Name)
		if !strings.HasPrefix(dst+string(filepath.Separator), root) {
			t.Fatalf("%s: %q escapes the directory", path, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, os.FileMode(h.Mode).Perm()|0o700)
			if err == nil {
				err = os.Chmod(dst, os.FileMode(h.Mode).Perm()|modeSticky(h.Mode))
			}
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				break
			}
			var w *os.File
			if w, err = os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()); err == nil {
				_, err = io.Copy(w, tr)
				if cerr := w.Close(); err == nil {
					err = cerr
				}
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, dst)
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", path, h.Name, err)
		}
		if os.Geteuid() == 0 && h.Typeflag != tar.TypeSymlink {
			_ = os.Lchown(dst, h.Uid, h.Gid)
		}
	}
}

// modeSticky maps tar's sticky bit (c_ISVTX) onto os.ModeSticky.
func modeSticky(mode int64) os.FileMode {
	if mode&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}
