package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode"

	"github.com/opencontainers/go-digest"
)

// DefaultMaxSize bounds a download when HTTPOptions.MaxSize is zero: a
// server streaming forever must not fill the disk kiln's store is on.
const DefaultMaxSize int64 = 32 << 30

// HTTPOptions tune a download.
type HTTPOptions struct {
	// Filename, when set, names the file (BuildKit's llb.Filename; the
	// Dockerfile frontend sets it from the URL's path). Otherwise the
	// name comes from Content-Disposition, then the URL's path.
	Filename string
	// Checksum, when set ("sha256:…"), is verified before the file is
	// given its name: on a mismatch nothing is left in the directory.
	Checksum digest.Digest
	// MaxSize bounds the body (DefaultMaxSize when zero).
	MaxSize int64
	// Client, when set, is used instead of one built by NewClient.
	Client *http.Client
	// ETag, when set, is sent as If-None-Match: a 304 answer makes HTTP
	// return a File with NotModified set and write nothing (BuildKit
	// revalidates a download it has by its entity tag the same way).
	ETag string
}

// File is a downloaded file.
type File struct {
	// Name is the file's name in the directory (one path component).
	Name string
	// Path is its host path: the directory joined with Name.
	Path string
	// Digest is the sha256 of its bytes.
	Digest digest.Digest
	// ModTime is the mtime it was given: Last-Modified, else the epoch,
	// as BuildKit's HTTP source.
	ModTime time.Time
	// LastModified is true when the server sent a usable Last-Modified.
	LastModified bool
	// ETag is the server's entity tag, if any.
	ETag string
	// NotModified is set when the server answered 304 to HTTPOptions.ETag:
	// only ETag is set then, and nothing was written.
	NotModified bool
}

// NewClient returns the HTTP client downloads use: the proxy from
// HTTP_PROXY/HTTPS_PROXY/NO_PROXY, and TLS verified against the system's
// roots (which SSL_CERT_FILE and SSL_CERT_DIR extend or replace, as for
// any Go program). A slow server is bounded by the response-header
// timeout; the body by the caller's context.
func NewClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyFromEnvironment
	tr.ResponseHeaderTimeout = 2 * time.Minute
	return &http.Client{Transport: tr}
}

// HTTP downloads rawURL into the directory dir (which the caller owns and
// which should be empty) as one regular file of mode 0600, with BuildKit's
// HTTP-source rules for its name and mtime. The body is written under a
// temporary name and hashed on the way; only when its digest matches
// opts.Checksum (if given) is it renamed to its final name.
func HTTP(ctx context.Context, rawURL, dir string, opts HTTPOptions) (File, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return File{}, fmt.Errorf("downloading %s: want an http:// or https:// URL with a host", Redact(rawURL))
	}
	if opts.Checksum != "" {
		if err := opts.Checksum.Validate(); err != nil {
			return File{}, fmt.Errorf("checksum %q: %w (want sha256:<64 hex digits>)", opts.Checksum, err)
		}
	}
	client := opts.Client
	if client == nil {
		client = NewClient()
	}
	limit := opts.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return File{}, fmt.Errorf("downloading %s: %w", Redact(rawURL), err)
	}
	if opts.ETag != "" {
		req.Header.Set("If-None-Match", opts.ETag)
	}
	resp, err := client.Do(req)
	if err != nil {
		return File{}, fmt.Errorf("downloading %s: %w (check the URL, and HTTPS_PROXY/NO_PROXY if a proxy is needed)", Redact(rawURL), err)
	}
	defer resp.Body.Close()
	if opts.ETag != "" && resp.StatusCode == http.StatusNotModified {
		etag := resp.Header.Get("ETag")
		if etag == "" {
			etag = opts.ETag
		}
		if etag == opts.ETag {
			return File{ETag: etag, NotModified: true}, nil
		}
		return File{}, fmt.Errorf("downloading %s: the server answered 304 for another entity tag (%s, asked %s)", Redact(rawURL), etag, opts.ETag)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return File{}, fmt.Errorf("downloading %s: the server answered %s", Redact(rawURL), resp.Status)
	}
	if resp.ContentLength > limit {
		return File{}, fmt.Errorf("downloading %s: %d bytes is over the limit of %d", Redact(rawURL), resp.ContentLength, limit)
	}

	name := FileName(rawURL, opts.Filename, resp.Header.Get("Content-Disposition"))
	d, err := openDir(dir)
	if err != nil {
		return File{}, err
	}
	defer d.close()

	var h hash.Hash
	var algo digest.Algorithm = digest.SHA256
	if opts.Checksum != "" && opts.Checksum.Algorithm() != digest.SHA256 {
		algo = opts.Checksum.Algorithm()
	}
	h = algo.Hash()
	sum256 := sha256.New()
	tmp := ".download-" + fmt.Sprint(time.Now().UnixNano())
	f, err := d.create(tmp, 0o600)
	if err != nil {
		return File{}, fmt.Errorf("downloading %s: %w", Redact(rawURL), err)
	}
	n, err := io.Copy(io.MultiWriter(f, h, sum256), io.LimitReader(resp.Body, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = fmt.Errorf("the body is over the limit of %d bytes", limit)
	}
	if err != nil {
		d.remove(tmp)
		return File{}, fmt.Errorf("downloading %s: %w", Redact(rawURL), err)
	}
	got := digest.NewDigest(algo, h)
	if opts.Checksum != "" && got != opts.Checksum {
		d.remove(tmp)
		return File{}, &ChecksumError{URL: Redact(rawURL), Got: got, Want: opts.Checksum}
	}
	mtime := time.Unix(0, 0)
	lastMod := false
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			mtime, lastMod = t, true
		}
	}
	if err := d.finish(tmp, name, mtime); err != nil {
		d.remove(tmp)
		return File{}, fmt.Errorf("downloading %s: %w", Redact(rawURL), err)
	}
	return File{
		Name:         name,
		Path:         dir + "/" + name,
		Digest:       digest.NewDigest(digest.SHA256, sum256),
		ModTime:      mtime,
		LastModified: lastMod,
		ETag:         resp.Header.Get("ETag"),
	}, nil
}

// ChecksumError is a download whose digest is not the one asked for.
type ChecksumError struct {
	URL       string
	Got, Want digest.Digest
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("digest mismatch for %s: %s (expected: %s); check --checksum against the file the URL serves", e.URL, e.Got, e.Want)
}

// FileName is the name BuildKit's HTTP source gives a download: manual
// when set, else the filename parameter of Content-Disposition, else the
// last element of the URL's path, else "download" — always one safe path
// component.
func FileName(rawURL, manual, contentDisposition string) string {
	if manual != "" {
		return safeFileName(manual)
	}
	if contentDisposition != "" {
		if _, params, err := mime.ParseMediaType(contentDisposition); err == nil {
			if fn := params["filename"]; fn != "" && !strings.HasSuffix(fn, "/") {
				if base := path.Base(strings.ReplaceAll(fn, "\\", "/")); base != "" {
					return safeFileName(base)
				}
			}
		}
	}
	if u, err := url.Parse(rawURL); err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" {
			return safeFileName(base)
		}
	}
	return safeFileName("")
}

// URLFileName is the name the Dockerfile frontend gives an ADD of a URL:
// the last element of its path, or "__unnamed__" (Content-Disposition is
// not consulted for ADD, as in BuildKit).
func URLFileName(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		if base := path.Base(u.Path); base != "." && base != "/" {
			return safeFileName(base)
		}
	}
	return "__unnamed__"
}

// safeFileName reduces s to one path component without control
// characters, or "download".
func safeFileName(s string) string {
	name := path.Base(strings.TrimSpace(s))
	if name == "" || name == "." || name == ".." || name == "/" {
		return "download"
	}
	for _, r := range name {
		if r == 0 || unicode.IsControl(r) {
			return "download"
		}
	}
	return name
}

// Redact drops the password from a URL, for messages and records.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

var errNotSupported = errors.New("remote sources are only supported on Linux")
