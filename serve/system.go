package serve

import (
	"context"
	"net/http"
	"runtime"
	"time"
)

// Backend is what the server reports on and, later, builds with.
type Backend interface {
	// Version describes the kiln binary serving.
	Version() Version
	// Info describes the host and the store, for GET /info.
	Info(ctx context.Context) (Info, error)
}

// Version is the answer to GET /version, dockerd's shape.
type Version struct {
	Platform      struct{ Name string }
	Components    []Component
	Version       string
	APIVersion    string `json:"ApiVersion"`
	MinAPIVersion string `json:"MinAPIVersion,omitempty"`
	GitCommit     string
	GoVersion     string
	Os            string
	Arch          string
	KernelVersion string `json:",omitempty"`
	Experimental  bool   `json:",omitempty"`
	BuildTime     string `json:",omitempty"`
}

// Component is one part of the server, as `docker version` lists them.
type Component struct {
	Name    string
	Version string
	Details map[string]string `json:",omitempty"`
}

// NewVersion fills the parts of a Version that come from the running
// binary and host; the caller gives the kiln version, commit and build
// time, which are set at link time.
func NewVersion(version, gitCommit, buildTime string) Version {
	v := Version{
		Version:       version,
		APIVersion:    MaxAPIVersion,
		MinAPIVersion: MinAPIVersion,
		GitCommit:     gitCommit,
		GoVersion:     runtime.Version(),
		Os:            runtime.GOOS,
		Arch:          runtime.GOARCH,
		KernelVersion: kernelVersion(),
		BuildTime:     buildTime,
	}
	v.Platform.Name = "kiln"
	v.Components = []Component{{Name: "Engine", Version: version, Details: map[string]string{
		"ApiVersion":    MaxAPIVersion,
		"MinAPIVersion": MinAPIVersion,
		"GitCommit":     gitCommit,
		"GoVersion":     v.GoVersion,
		"Os":            v.Os,
		"Arch":          v.Arch,
		"KernelVersion": v.KernelVersion,
		"BuildTime":     buildTime,
		"Experimental":  "false",
	}}}
	return v
}

// Info is the answer to GET /info: the fields of dockerd's that mean
// something for kiln. Containers are always 0: kiln runs none.
type Info struct {
	ID                string
	Containers        int
	ContainersRunning int
	ContainersPaused  int
	ContainersStopped int
	Images            int
	Driver            string
	DriverStatus      [][2]string
	Plugins           struct {
		Volume, Network, Authorization, Log []string
	}
	MemoryLimit        bool
	SwapLimit          bool
	CPUCfsPeriod       bool `json:"CpuCfsPeriod"`
	CPUCfsQuota        bool `json:"CpuCfsQuota"`
	OomKillDisable     bool
	IPv4Forwarding     bool
	Debug              bool
	NFd                int
	NGoroutines        int
	SystemTime         string
	LoggingDriver      string
	CgroupDriver       string
	CgroupVersion      string
	KernelVersion      string
	OperatingSystem    string
	OSVersion          string
	OSType             string
	Architecture       string
	IndexServerAddress string
	RegistryConfig     RegistryConfig
	NCPU               int
	MemTotal           int64
	DockerRootDir      string
	Name               string
	Labels             []string
	ExperimentalBuild  bool
	ServerVersion      string
	Runtimes           map[string]struct{}
	DefaultRuntime     string
	Swarm              struct{ LocalNodeState string }
	LiveRestoreEnabled bool
	Isolation          string
	SecurityOptions    []string
	Warnings           []string
}

// RegistryConfig is the registry part of Info. kiln's registry settings
// are in kiln.toml (kiln info shows them); none are reported here.
type RegistryConfig struct {
	InsecureRegistryCIDRs []string
	IndexConfigs          map[string]struct{}
	Mirrors               []string
}

// NewInfo fills the host's part of an Info; the caller adds the store's
// (DockerRootDir, Images) and the server's (ServerVersion).
func NewInfo() Info {
	h := hostFacts()
	info := Info{
		ID:                 h.id,
		Driver:             "overlayfs",
		DriverStatus:       [][2]string{},
		CgroupDriver:       "none",
		CgroupVersion:      h.cgroupVersion,
		KernelVersion:      h.kernel,
		OperatingSystem:    h.osName,
		OSVersion:          h.osVersion,
		OSType:             "linux",
		Architecture:       h.machine,
		IndexServerAddress: "https://index.docker.io/v1/",
		RegistryConfig:     RegistryConfig{InsecureRegistryCIDRs: []string{}, IndexConfigs: map[string]struct{}{}, Mirrors: []string{}},
		NCPU:               runtime.NumCPU(),
		MemTotal:           h.memTotal,
		Name:               h.hostname,
		Labels:             []string{},
		LoggingDriver:      "none",
		Runtimes:           map[string]struct{}{},
		DefaultRuntime:     "kiln",
		Isolation:          "",
		SecurityOptions:    []string{"name=seccomp,profile=builtin"},
		Warnings:           []string{},
		NGoroutines:        runtime.NumGoroutine(),
	}
	info.Swarm.LocalNodeState = "inactive"
	return info
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	h := w.Header()
	// Builder-Version 1 makes clients use the classic POST /build, which
	// is what kiln serves (not BuildKit's gRPC session).
	h.Set("Builder-Version", "1")
	h.Set("Docker-Experimental", "false")
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	if r.Method == http.MethodHead {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", "0")
		return nil
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	// a write error means the client left: no one to tell
	w.Write([]byte("OK"))
	return nil
}

func (s *Server) version(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	writeJSON(w, http.StatusOK, s.backend.Version())
	return nil
}

func (s *Server) info(w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	info, err := s.backend.Info(r.Context())
	if err != nil {
		return err
	}
	info.SystemTime = time.Now().Format(time.RFC3339Nano)
	writeJSON(w, http.StatusOK, info)
	return nil
}
