// Package deploy holds edgecache's deployment files: the container image
// (Dockerfile), a compose file with Redis, Qdrant, an OpenTelemetry
// collector, Prometheus and Grafana, Kubernetes manifests for a regional
// edge with per-region kustomize overlays, a Grafana dashboard and
// Prometheus alert rules. README.md explains a regional deployment.
//
// There is no Go code here. The package's tests parse every file so that
// none of it rots: Kubernetes manifests into the typed API objects with
// unknown fields rejected (overlays rendered first), the dashboard and the
// alert rules against the metric names edgecache exports, the compose file
// against the files it references. deploy/config.example.yaml and the
// configurations embedded here are loaded by the real config loader in
// cmd/internal/config (deploy_test.go there).
package deploy
