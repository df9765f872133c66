package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/kiln-build/kiln/serve"
)

// ImageSummary is one entry of GET /images/json: the shape kiln serve
// answers with, one definition of the wire format for both sides.
type ImageSummary = serve.ImageSummary

// Images asks GET /images/json.
func (c *Client) Images(ctx context.Context) ([]ImageSummary, error) {
	var out []ImageSummary
	err := c.getJSON(ctx, "/images/json", nil, &out)
	return out, err
}

// AuthConfig is a registry credential as the Engine API carries it in
// X-Registry-Auth and X-Registry-Config (serve.AuthConfig, which prints
// no secret).
type AuthConfig = serve.AuthConfig

// EncodeAuth is the X-Registry-Auth header value of a: base64url JSON.
func EncodeAuth(a AuthConfig) string {
	b, _ := json.Marshal(a) // strings only: always encodes
	return base64.URLEncoding.EncodeToString(b)
}

// Push sends POST /images/{name}/push: name is the repository, tag the
// tag ("" for all of the repository's tags, as dockerd has it), auth
// the registry's credentials (nil for none). It returns the push's
// message stream.
func (c *Client) Push(ctx context.Context, name, tag string, auth *AuthConfig) (*Stream, error) {
	q := url.Values{}
	if tag != "" {
		q.Set("tag", tag)
	}
	h := http.Header{}
	// dockerd requires the header, even empty credentials ({}).
	if auth == nil {
		auth = &AuthConfig{}
	}
	h.Set("X-Registry-Auth", EncodeAuth(*auth))
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/images/" + escapeName(name) + "/push", query: q, header: h})
	if err != nil {
		return nil, err
	}
	return newStream(resp.Body), nil
}

// escapeName keeps an image name's slashes: the server routes
// /images/{name:*}/push on the whole path.
func escapeName(name string) string {
	u := url.URL{Path: name}
	return u.EscapedPath()
}

// PruneOptions are POST /build/prune's query parameters.
type PruneOptions struct {
	// All removes all build cache, not only what nothing uses.
	All bool
	// KeepStorage, in bytes, is how much cache to keep (0: no limit).
	KeepStorage int64
	// Filters as docker builder prune --filter KEY=VALUE: until=24h.
	Filters map[string][]string
}

// PruneReport is POST /build/prune's answer.
type PruneReport struct {
	CachesDeleted  []string `json:"CachesDeleted"`
	SpaceReclaimed int64    `json:"SpaceReclaimed"`
}

// Query encodes o as POST /build/prune's query string.
func (o PruneOptions) Query() url.Values {
	q := url.Values{}
	if o.All {
		q.Set("all", "1")
	}
	if o.KeepStorage > 0 {
		q.Set("keep-storage", strconv.FormatInt(o.KeepStorage, 10))
	}
	if len(o.Filters) > 0 {
		q.Set("filters", jsonString(o.Filters))
	}
	return q
}

// BuildPrune sends POST /build/prune.
func (c *Client) BuildPrune(ctx context.Context, o PruneOptions) (PruneReport, error) {
	var rep PruneReport
	err := c.callJSON(ctx, request{method: http.MethodPost, path: "/build/prune", query: o.Query()}, &rep)
	return rep, err
}

// Tag sends POST /images/{name}/tag: the image name also goes by
// repo:tag.
func (c *Client) Tag(ctx context.Context, name, repo, tag string) error {
	q := url.Values{"repo": {repo}}
	if tag != "" {
		q.Set("tag", tag)
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: "/images/" + escapeName(name) + "/tag", query: q})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
