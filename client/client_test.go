package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// recorded is what the test server was asked.
type recorded struct {
	method, path string
	query        url.Values
	header       http.Header
	body         []byte
}

// unixServer serves h on a unix socket and returns a client for it and
// the requests it received.
func unixServer(t *testing.T, h http.HandlerFunc) (*Client, *[]recorded) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []recorded
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reqs = append(reqs, recorded{r.Method, r.URL.Path, r.URL.Query(), r.Header, b})
		h(w, r)
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := New(Options{Host: "unix://" + sock, UserAgent: "kiln/test"})
	if err != nil {
		t.Fatal(err)
	}
	return c, &reqs
}

func TestNewHosts(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		base string
		err  string
	}{
		{"unix", Options{Host: "unix:///run/kiln/kiln.sock"}, "http://kiln", ""},
		{"tcp default port", Options{Host: "tcp://10.0.0.1"}, "http://10.0.0.1:2375", ""},
		{"tcp port", Options{Host: "tcp://127.0.0.1:9999"}, "http://127.0.0.1:9999", ""},
		{"ipv6", Options{Host: "tcp://[::1]"}, "http://[::1]:2375", ""},
		{"no scheme", Options{Host: "/run/kiln.sock"}, "", "want unix:///PATH"},
		{"unknown scheme", Options{Host: "ssh://builder"}, "", "unknown scheme ssh"},
		{"unix without path", Options{Host: "unix://"}, "", "needs a path"},
		{"unix with TLS", Options{Host: "unix:///s", TLSCACert: "ca.pem"}, "", "for tcp:// hosts"},
		{"tls missing CA", Options{Host: "tcp://h", TLSCACert: "/nonexistent/ca.pem"}, "", "reading --tlscacert"},
		{"cert without key", Options{Host: "tcp://h", TLSCert: "c.pem"}, "", "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("New(%+v): %v, want an error naming %q", tc.o, err, tc.err)
				}
				return
			}
			if err != nil || c.base != tc.base {
				t.Fatalf("New(%+v): base %q, %v; want %q", tc.o, c.base, err, tc.base)
			}
		})
	}
}

func TestBuildRequest(t *testing.T) {
	c, reqs := unixServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"stream":"#1 [1/2] FROM busybox\n"}`+"\n"+`{"stream":"#1 DONE 0.0s\n"}`+"\n"+`{"aux":{"ID":"sha256:abc"}}`+"\n")
	})
	v := "x"
	o := BuildOptions{
		Dockerfile: "sub/Dockerfile", Tags: []string{"a:1", "b"}, BuildArgs: map[string]*string{"A": &v, "UNSET": nil},
		Labels: map[string]string{"l": "v"}, Target: "t", NoCache: true, Pull: true, NetworkMode: "none", Platform: "linux/arm64",
		Memory: 1 << 20, MemorySwap: -1, ShmSize: 64 << 20, CPUShares: 512, CPUPeriod: 100000, CPUQuota: 150000,
		ExtraHosts: []string{"h:1.2.3.4", "g:5.6.7.8"}, CacheFrom: []string{"reg/cache:1"},
		RegistryConfig: map[string]AuthConfig{"reg": {Username: "u", Password: "p"}},
	}
	st, err := c.Build(context.Background(), strings.NewReader("TAR"), o)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	for {
		m, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	st.Close()
	if len(msgs) != 3 || msgs[0].Stream != "#1 [1/2] FROM busybox\n" || string(msgs[2].Aux) != `{"ID":"sha256:abc"}` {
		t.Errorf("messages: %+v", msgs)
	}
	r := (*reqs)[0]
	if r.method != "POST" || r.path != "/v1.41/build" || string(r.body) != "TAR" {
		t.Errorf("request %s %s body %q", r.method, r.path, r.body)
	}
	want := url.Values{
		"dockerfile": {"sub/Dockerfile"}, "t": {"a:1", "b"}, "buildargs": {`{"A":"x","UNSET":null}`}, "labels": {`{"l":"v"}`},
		"target": {"t"}, "nocache": {"1"}, "pull": {"1"}, "networkmode": {"none"}, "platform": {"linux/arm64"},
		"memory": {"1048576"}, "memswap": {"-1"}, "shmsize": {"67108864"}, "cpushares": {"512"}, "cpuperiod": {"100000"},
		"cpuquota": {"150000"}, "extrahosts": {"h:1.2.3.4", "g:5.6.7.8"}, "cachefrom": {`["reg/cache:1"]`},
	}
	if !reflect.DeepEqual(r.query, want) {
		t.Errorf("query\n%v\nwant\n%v", r.query, want)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/x-tar" {
		t.Errorf("Content-Type %q", ct)
	}
	if ua := r.header.Get("User-Agent"); ua != "kiln/test" {
		t.Errorf("User-Agent %q", ua)
	}
	b, err := base64.URLEncoding.DecodeString(r.header.Get("X-Registry-Config"))
	if err != nil || string(b) != `{"reg":{"username":"u","password":"p"}}` {
		t.Errorf("X-Registry-Config %q (%v)", b, err)
	}
	if q := (BuildOptions{}).Query(); len(q) != 0 {
		t.Errorf("empty options encode as %v, want nothing", q)
	}
}

func TestStreamErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"errorDetail", `{"stream":"x\n"}` + "\n" + `{"errorDetail":{"message":"Dockerfile:3: boom"},"error":"Dockerfile:3: boom"}`, "Dockerfile:3: boom"},
		{"error only", `{"error":"old style"}`, "old style"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := unixServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tc.body) })
			st, err := c.Build(context.Background(), strings.NewReader(""), BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var got error
			for got == nil {
				m, err := st.Next()
				if err != nil {
					t.Fatalf("stream ended without its error: %v", err)
				}
				got = m.Err()
			}
			var se *StreamError
			if !errors.As(got, &se) || se.Message != tc.want {
				t.Errorf("error %v, want %q", got, tc.want)
			}
		})
	}
}

func TestErrorAnswers(t *testing.T) {
	c, _ := unixServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotImplemented)
		io.WriteString(w, `{"message":"kiln serves builds and images only: GET /images/json is not implemented"}`)
	})
	_, err := c.Images(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 501 || !NotImplemented(err) || !strings.Contains(err.Error(), "GET /images/json is not implemented") {
		t.Errorf("Images on a 501: %v", err)
	}
	bad, err := New(Options{Host: "unix://" + filepath.Join(t.TempDir(), "none.sock")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "is kiln serve running there?") {
		t.Errorf("Ping of a missing socket: %v", err)
	}
}

func TestImagesPushPruneVersion(t *testing.T) {
	c, reqs := unixServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/images/json"):
			io.WriteString(w, `[{"Id":"sha256:0123456789abcdef","RepoTags":["x:1"],"Created":1700000000,"Size":42}]`)
		case strings.HasSuffix(r.URL.Path, "/push"):
			io.WriteString(w, `{"status":"Pushing","id":"abc","progressDetail":{"current":1,"total":2}}`+"\n"+`{"aux":{"Tag":"1","Digest":"sha256:d","Size":3}}`+"\n")
		case strings.HasSuffix(r.URL.Path, "/build/prune"):
			io.WriteString(w, `{"CachesDeleted":["a","b"],"SpaceReclaimed":1000}`)
		case strings.HasSuffix(r.URL.Path, "/version"):
			io.WriteString(w, `{"Platform":{"Name":"kiln"},"Version":"v1","ApiVersion":"1.41","MinAPIVersion":"1.24","Os":"linux"}`)
		default:
			w.WriteHeader(http.StatusCreated)
		}
	})
	ctx := context.Background()
	images, err := c.Images(ctx)
	if err != nil || len(images) != 1 || images[0].ID != "sha256:0123456789abcdef" || images[0].RepoTags[0] != "x:1" || images[0].Created != 1700000000 {
		t.Errorf("Images: %+v, %v", images, err)
	}
	if err := c.Tag(ctx, "src:1", "127.0.0.1:5000/team/app", "2"); err != nil {
		t.Errorf("Tag: %v", err)
	}
	st, err := c.Push(ctx, "127.0.0.1:5000/team/app", "2", &AuthConfig{Username: "u", Password: "p", ServerAddress: "127.0.0.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Next()
	if err != nil || m.ID != "abc" || m.ProgressDetail == nil || m.ProgressDetail.Total != 2 {
		t.Errorf("push progress: %+v, %v", m, err)
	}
	m, _ = st.Next()
	var aux PushAux
	if json.Unmarshal(m.Aux, &aux) != nil || aux.Digest != "sha256:d" {
		t.Errorf("push aux: %s", m.Aux)
	}
	st.Close()
	rep, err := c.BuildPrune(ctx, PruneOptions{All: true, KeepStorage: 5 << 30, Filters: map[string][]string{"until": {"24h0m0s"}}})
	if err != nil || len(rep.CachesDeleted) != 2 || rep.SpaceReclaimed != 1000 {
		t.Errorf("BuildPrune: %+v, %v", rep, err)
	}
	v, err := c.ServerVersion(ctx)
	if err != nil || v.Platform.Name != "kiln" || v.APIVersion != "1.41" || v.MinAPIVersion != "1.24" {
		t.Errorf("ServerVersion: %+v, %v", v, err)
	}

	r := *reqs
	if r[0].method != "GET" || r[0].path != "/v1.41/images/json" {
		t.Errorf("images request %s %s", r[0].method, r[0].path)
	}
	if r[1].method != "POST" || r[1].path != "/v1.41/images/src:1/tag" || !reflect.DeepEqual(r[1].query, url.Values{"repo": {"127.0.0.1:5000/team/app"}, "tag": {"2"}}) {
		t.Errorf("tag request %s %s %v", r[1].method, r[1].path, r[1].query)
	}
	if r[2].method != "POST" || r[2].path != "/v1.41/images/127.0.0.1:5000/team/app/push" || r[2].query.Get("tag") != "2" {
		t.Errorf("push request %s %s %v", r[2].method, r[2].path, r[2].query)
	}
	auth, err := base64.URLEncoding.DecodeString(r[2].header.Get("X-Registry-Auth"))
	if err != nil || string(auth) != `{"username":"u","password":"p","serveraddress":"127.0.0.1:5000"}` {
		t.Errorf("X-Registry-Auth %q (%v)", auth, err)
	}
	if want := (url.Values{"all": {"1"}, "keep-storage": {"5368709120"}, "filters": {`{"until":["24h0m0s"]}`}}); r[3].path != "/v1.41/build/prune" || !reflect.DeepEqual(r[3].query, want) {
		t.Errorf("prune request %s %v, want %v", r[3].path, r[3].query, want)
	}
	if r[4].path != "/v1.41/version" {
		t.Errorf("version request %s", r[4].path)
	}
}

func TestPushWithoutCredentials(t *testing.T) {
	c, reqs := unixServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "") })
	st, err := c.Push(context.Background(), "x", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	r := (*reqs)[0]
	// dockerd wants the header even without credentials
	if got := r.header.Get("X-Registry-Auth"); got != base64.URLEncoding.EncodeToString([]byte("{}")) || r.query.Has("tag") {
		t.Errorf("X-Registry-Auth %q, query %v", got, r.query)
	}
}
