package serve

import (
	"fmt"
	"net/http"
)

// networkRoutes answers a network lookup with dockerd's 404. kiln has no
// networks, so "not found" is the true answer, and docker-compose needs
// it: before building, compose 1.29 looks up the project's default
// network (PROJECT_default) and goes on when it is not found, but stops
// on any other error, the 501 included.
func (s *Server) networkRoutes() {
	s.handle("GET", "/networks/{id}", s.networkInspect)
}

func (s *Server) networkInspect(w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	return &statusError{http.StatusNotFound, fmt.Errorf("network %s not found: kiln serve has no networks (it serves builds and images only)", vars["id"])}
}
