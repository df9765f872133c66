package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/kiln-build/kiln/platform"
	"github.com/kiln-build/kiln/registry"
	"github.com/kiln-build/kiln/serve"
)

// kiln serve's registry endpoints run the code of kiln login, kiln push
// and a build's FROM, with the credentials the client sent: the
// resolver's keychain is the request's (serve.Keychain), never the
// server's Docker config, and it lives as long as the request.

// requestKeychainKey carries a POST /build's keychain in its context to
// the build's resolver: builds run side by side, each with its client's
// credentials, so a process-wide setting (DOCKER_CONFIG) cannot carry
// them.
type requestKeychainKey struct{}

// withRequestKeychain gives the build run with ctx the credentials of kc.
func withRequestKeychain(ctx context.Context, kc authn.Keychain) context.Context {
	if kc == nil {
		return ctx
	}
	return context.WithValue(ctx, requestKeychainKey{}, kc)
}

// useRequestKeychain makes the build's resolver use the keychain of a
// kiln serve request, when ctx has one. Call it after resolver.
func (o *registryOptions) useRequestKeychain(ctx context.Context) {
	if kc, ok := ctx.Value(requestKeychainKey{}).(authn.Keychain); ok && o.res != nil {
		o.res.Keychain = kc
		// the client sends the credentials docker login (or kiln
		// login, which writes the same config) stored on its machine
		o.res.LoginCommand = "docker login"
	}
}

// clientResolver is the resolver of one request: kiln.toml's mirrors, TLS
// and insecure settings, the client's credentials.
func clientResolver(kc authn.Keychain) (*registry.Resolver, error) {
	res, err := newResolver(nil, nil, io.Discard)
	if err != nil {
		return nil, err
	}
	if kc == nil {
		kc = &serve.Keychain{}
	}
	res.Keychain = kc
	res.LoginCommand = "docker login"
	return res, nil
}

// deniedError is a registry refusing the client's credentials.
type deniedError struct{ error }

func (e deniedError) Unwrap() error        { return e.error }
func (e deniedError) Is(target error) bool { return target == serve.ErrRegistryDenied }

// forClient rewords a registry's refusal for a client of kiln serve: the
// credentials are the client's (docker login on its side), not kiln
// login's on the server. Other errors are returned as they are.
func forClient(doing string, err error) error {
	var ae *registry.AuthError
	if !errors.As(err, &ae) {
		return err
	}
	host := ae.Registry
	var msg string
	switch {
	case ae.Denied:
		msg = fmt.Sprintf("registry %s denied access: the credentials sent do not allow this (check the repository name and your permissions)", host)
	case ae.Anonymous:
		msg = fmt.Sprintf("authentication to registry %s failed: it requires credentials and the client sent none (run docker login %s)", host, host)
	default:
		msg = fmt.Sprintf("authentication to registry %s failed: the registry rejected the username or password (run docker login %s again)", host, host)
	}
	return deniedError{fmt.Errorf("%s: %s: %w", doing, msg, ae.Err)}
}

// RegistryLogin implements serve.RegistryBackend: kiln login's check,
// without storing anything.
func (b *serveBackend) RegistryLogin(ctx context.Context, a serve.AuthConfig) error {
	c, err := a.Authn()
	if err != nil {
		return err
	}
	if c.Password == "" {
		return errors.New("logging in: kiln serve checks a username and password: give docker login a password")
	}
	reg := a.ServerAddress
	if reg == "" {
		reg = "docker.io"
	}
	res, err := clientResolver(nil)
	if err != nil {
		return err
	}
	if err := res.CheckLogin(ctx, reg, c.Username, c.Password); err != nil {
		var ae *registry.AuthError
		if errors.As(err, &ae) {
			return deniedError{err}
		}
		return err
	}
	return nil
}

// PushImage implements serve.RegistryBackend with kiln push's code.
func (b *serveBackend) PushImage(ctx context.Context, ref string, kc authn.Keychain, progress func(serve.LayerProgress)) (serve.Pushed, error) {
	// The store stays open (locked against prune) while the blobs are
	// read, as for kiln push.
	st, err := storeOpen(b.root)
	if err != nil {
		return serve.Pushed{}, err
	}
	defer st.Close()
	img, found, err := st.Image(ref)
	if err != nil {
		return serve.Pushed{}, fmt.Errorf("pushing %s: reading it from kiln's store: %w", ref, err)
	}
	if !found {
		return serve.Pushed{}, fmt.Errorf("pushing %s: %w in kiln's store: build one with docker build -t %s, or name one so with docker tag", ref, serve.ErrUnknownImage, ref)
	}
	res, err := clientResolver(kc)
	if err != nil {
		return serve.Pushed{}, err
	}
	size, err := img.Size()
	if err != nil {
		return serve.Pushed{}, fmt.Errorf("pushing %s: reading the manifest size: %w", ref, err)
	}
	ls, err := img.Layers()
	if err != nil {
		return serve.Pushed{}, fmt.Errorf("pushing %s: listing the layers: %w", ref, err)
	}
	t := newLayerTracker(progress, true)
	for _, l := range ls {
		t.waiting(l)
	}
	pushed, err := res.Push(ctx, &trackedImage{Image: img, t: t}, []string{ref})
	if err != nil {
		return serve.Pushed{}, forClient("pushing "+ref, err)
	}
	// The layers not read were in the registry already (or mounted
	// from another of its repositories).
	t.rest(serve.LayerExists)
	return serve.Pushed{Digest: pushed[0].Digest.String(), Size: size}, nil
}

// PullImage implements serve.RegistryBackend with the code of a build's
// FROM: resolve (mirrors first), unpack each missing layer into the
// store, then name the image.
func (b *serveBackend) PullImage(ctx context.Context, ref, plat string, kc authn.Keychain, progress func(serve.LayerProgress)) (serve.Pulled, error) {
	want := platform.Native()
	if plat != "" {
		p, err := platform.Parse(plat)
		if err != nil {
			return serve.Pulled{}, fmt.Errorf("pulling %s: platform %q: %w", ref, plat, err)
		}
		want = p
	}
	res, err := clientResolver(kc)
	if err != nil {
		return serve.Pulled{}, err
	}
	img, _, err := res.ResolvePlatform(ctx, ref, want)
	if err != nil {
		return serve.Pulled{}, forClient("pulling "+ref, fmt.Errorf("pulling %s: %w", ref, err))
	}
	digest, err := img.Digest()
	if err != nil {
		return serve.Pulled{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	st, err := storeOpen(b.root)
	if err != nil {
		return serve.Pulled{}, err
	}
	defer st.Close()
	upToDate := false
	if old, found, err := st.Image(ref); err == nil && found {
		if d, err := old.Digest(); err == nil && d == digest {
			upToDate = true
		}
	}
	ls, err := img.Layers()
	if err != nil {
		return serve.Pulled{}, fmt.Errorf("pulling %s: listing the layers: %w", ref, err)
	}
	t := newLayerTracker(progress, false)
	var missing []v1.Layer
	for _, l := range ls {
		diffID, err := l.DiffID()
		if err != nil {
			return serve.Pulled{}, fmt.Errorf("pulling %s: reading a layer's diffID: %w", ref, err)
		}
		if _, ok, err := st.LayerByDiffID(diffID); err == nil && ok {
			t.report(l, serve.LayerExists, 0, 0)
			continue
		}
		t.waiting(l)
		missing = append(missing, l)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for _, l := range missing {
		g.Go(func() error {
			if _, err := st.PullLayer(gctx, &trackedLayer{Layer: l, t: t}); err != nil {
				return fmt.Errorf("pulling %s: %w", ref, err)
			}
			t.report(l, serve.LayerDone, 0, 0)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return serve.Pulled{}, err
	}
	if err := st.PutImage(ctx, []string{ref}, img); err != nil {
		return serve.Pulled{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	return serve.Pulled{Digest: digest.String(), UpToDate: upToDate}, nil
}

// layerTracker reports the layers of a push or pull: each read of a
// layer's compressed bytes is a transfer.
type layerTracker struct {
	progress func(serve.LayerProgress)
	// doneAtEOF: a push is done with a layer once it is read; a pull
	// once it is unpacked, which its caller reports.
	doneAtEOF bool

	mu      sync.Mutex
	pending map[string]v1.Layer // reported waiting, not read yet
	order   []string
}

func newLayerTracker(progress func(serve.LayerProgress), doneAtEOF bool) *layerTracker {
	return &layerTracker{progress: progress, doneAtEOF: doneAtEOF, pending: map[string]v1.Layer{}}
}

func (t *layerTracker) report(l v1.Layer, s serve.LayerState, current, total int64) {
	d, err := l.Digest()
	if err != nil {
		return
	}
	t.mu.Lock()
	if s != serve.LayerWaiting {
		delete(t.pending, d.String())
	}
	t.mu.Unlock()
	t.progress(serve.LayerProgress{Digest: d.String(), State: s, Current: current, Total: total})
}

func (t *layerTracker) waiting(l v1.Layer) {
	d, err := l.Digest()
	if err != nil {
		return
	}
	t.mu.Lock()
	if _, ok := t.pending[d.String()]; !ok {
		t.pending[d.String()] = l
		t.order = append(t.order, d.String())
	}
	t.mu.Unlock()
	t.report(l, serve.LayerWaiting, 0, 0)
}

// rest reports every layer not read as s.
func (t *layerTracker) rest(s serve.LayerState) {
	t.mu.Lock()
	var left []v1.Layer
	for _, d := range t.order {
		if l, ok := t.pending[d]; ok {
			left = append(left, l)
		}
	}
	t.mu.Unlock()
	for _, l := range left {
		t.report(l, s, 0, 0)
	}
}

// trackedImage is an image whose layers report their reads.
type trackedImage struct {
	v1.Image
	t *layerTracker
}

func (i *trackedImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for n, l := range ls {
		out[n] = &trackedLayer{Layer: l, t: i.t}
	}
	return out, nil
}

func (i *trackedImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return &trackedLayer{Layer: l, t: i.t}, nil
}

// trackedLayer reports the reads of its compressed bytes.
type trackedLayer struct {
	v1.Layer
	t *layerTracker
}

func (l *trackedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	total, _ := l.Layer.Size()
	l.t.report(l.Layer, serve.LayerTransferring, 0, total)
	return &countingReader{rc: rc, l: l, total: total}, nil
}

// progressStep is how many bytes a transfer reports at a time: often
// enough for a progress bar, not a message per read.
const progressStep = 512 << 10

type countingReader struct {
	rc       io.ReadCloser
	l        *trackedLayer
	n, total int64
	reported int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n += int64(n)
	if c.n-c.reported >= progressStep {
		c.reported = c.n
		c.l.t.report(c.l.Layer, serve.LayerTransferring, c.n, c.total)
	}
	if errors.Is(err, io.EOF) && c.l.t.doneAtEOF {
		c.l.t.report(c.l.Layer, serve.LayerDone, 0, 0)
	}
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }
