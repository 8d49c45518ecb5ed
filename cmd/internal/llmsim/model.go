package llmsim

import (
	"net/http"
	"strconv"
	"strings"
)

// serveModel answers GET /v1/models/{id} with that one model, or 404.
func (s *Server) serveModel(w http.ResponseWriter, r *http.Request) bool {
	id, ok := strings.CutPrefix(r.URL.Path, "/v1/models/")
	if !ok || id == "" {
		return false
	}
	s.counts[routeModels].Add(1)
	if r.Method != http.MethodGet {
		writeMethodNotAllowed(w, r, http.MethodGet)
		return true
	}
	if id != "sim-1" && id != "sim-embed-1" {
		writeError(w, http.StatusNotFound, "The model '"+id+"' does not exist", "model")
		return true
	}
	b := []byte(`{"id":"` + id + `","object":"model","created":` + strconv.FormatInt(s.created, 10) + `,"owned_by":"llmsim"}` + "\n")
	writeBody(w, http.StatusOK, b)
	return true
}
