package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// BuildOptions are POST /build's query parameters, as the docker CLI
// sends them.
type BuildOptions struct {
	// Dockerfile is the Dockerfile's path inside the context ("" is
	// Dockerfile).
	Dockerfile string
	Tags       []string
	// BuildArgs maps a name to its value; a nil value is an argument
	// given without a value that the environment does not set.
	BuildArgs map[string]*string
	Labels    map[string]string
	Target    string
	NoCache   bool
	Pull      bool
	// Quiet asks for nothing but the image ID.
	Quiet bool
	// NetworkMode is default, none or host ("" leaves it out).
	NetworkMode string
	Platform    string
	// Memory, MemorySwap (-1 unlimited), ShmSize are bytes; 0 leaves
	// each out.
	Memory, MemorySwap, ShmSize int64
	CPUShares                   int64
	CPUPeriod, CPUQuota         int64
	ExtraHosts                  []string // HOST:IP
	CacheFrom                   []string // image references
	// RegistryConfig is sent as X-Registry-Config: credentials the
	// server may use to pull base images, by registry.
	RegistryConfig map[string]AuthConfig
}

// Query encodes o as POST /build's query string.
func (o BuildOptions) Query() url.Values {
	q := url.Values{}
	if o.Dockerfile != "" {
		q.Set("dockerfile", o.Dockerfile)
	}
	for _, t := range o.Tags {
		q.Add("t", t)
	}
	if len(o.BuildArgs) > 0 {
		q.Set("buildargs", jsonString(o.BuildArgs))
	}
	if len(o.Labels) > 0 {
		q.Set("labels", jsonString(o.Labels))
	}
	setIf := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	setInt := func(k string, v int64) {
		if v != 0 {
			q.Set(k, strconv.FormatInt(v, 10))
		}
	}
	setBool := func(k string, v bool) {
		if v {
			q.Set(k, "1")
		}
	}
	setIf("target", o.Target)
	setBool("nocache", o.NoCache)
	setBool("pull", o.Pull)
	setBool("q", o.Quiet)
	setIf("networkmode", o.NetworkMode)
	setIf("platform", o.Platform)
	setInt("memory", o.Memory)
	setInt("memswap", o.MemorySwap)
	setInt("shmsize", o.ShmSize)
	setInt("cpushares", o.CPUShares)
	setInt("cpuperiod", o.CPUPeriod)
	setInt("cpuquota", o.CPUQuota)
	for _, h := range o.ExtraHosts {
		q.Add("extrahosts", h) // one parameter per host, as the docker CLI sends them
	}
	if len(o.CacheFrom) > 0 {
		q.Set("cachefrom", jsonString(o.CacheFrom))
	}
	return q
}

func jsonString(v any) string {
	b, _ := json.Marshal(v) // maps and slices of strings always encode
	return string(b)
}

// Build sends POST /build with the context archive (a tar, plain or
// compressed) and returns the message stream of the build. Cancelling
// ctx, or closing the stream, hangs up: the server cancels the build.
func (c *Client) Build(ctx context.Context, context io.Reader, o BuildOptions) (*Stream, error) {
	h := http.Header{"Content-Type": {"application/x-tar"}}
	if len(o.RegistryConfig) > 0 {
		h.Set("X-Registry-Config", base64.URLEncoding.EncodeToString([]byte(jsonString(o.RegistryConfig))))
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/build", query: o.Query(), header: h, body: context})
	if err != nil {
		return nil, err
	}
	return newStream(resp.Body), nil
}
