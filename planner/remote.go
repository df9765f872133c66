package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/executor/copier"
	"github.com/kiln-build/kiln/source"
	"github.com/kiln-build/kiln/sshforward"
)

// remoteSource is one ADD source from outside the build context: an
// http(s) download or a git checkout. Like BuildKit, the step's key
// depends on what was fetched, never on when: a download is keyed by its
// checksum (given) or its content digest and Last-Modified (fetched while
// planning), a git source by the commit its ref resolves to.
type remoteSource struct {
	src string
	// http
	url      string
	name     string        // the file's name (from the URL's path)
	checksum digest.Digest // --checksum, when given
	file     source.File   // fetched while planning (no --checksum)
	dir      string        // where file is; removed by cleanup
	// revalidated: the server answered 304 to the ETag of an earlier
	// download, file is that download's record and the step downloads
	// the bytes only if it runs.
	revalidated bool
	// git
	git     *source.GitRef
	commit  source.Resolved
	keepGit bool
	agents  sshforward.Agents // the build's --ssh, for an ssh remote
}

// remoteADD splits an ADD's sources into the build context's and the
// remote ones, checks ADD's remote-only flags as BuildKit does, and
// resolves each remote source far enough to key the step: a download
// without --checksum is fetched now. cleanup removes what was fetched.
func (b *build) remoteADD(ctx context.Context, c copyCmd) (local []string, remotes []*remoteSource, cleanup func(), err error) {
	cleanup = func() {}
	if !c.add {
		return c.sd.SourcePaths, nil, cleanup, nil
	}
	for _, src := range c.sd.SourcePaths {
		if source.IsGit(src) || source.IsHTTP(src) {
			remotes = append(remotes, &remoteSource{src: src})
		} else {
			local = append(local, src)
		}
	}
	if c.checksum != "" {
		if len(c.sd.SourcePaths) != 1 {
			return nil, nil, cleanup, errors.New("checksum can't be specified for multiple sources")
		}
		if len(remotes) == 0 {
			return nil, nil, cleanup, errors.New("checksum requires HTTP(S) or Git sources")
		}
	}
	var dirs []string
	cleanup = func() {
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	for _, r := range remotes {
		if g, ok, gerr := source.ParseGit(r.src); ok {
			if gerr != nil {
				return nil, nil, cleanup, gerr
			}
			r.git = g
			if c.keepGitDir != nil && g.KeepGitDir != nil && *c.keepGitDir != *g.KeepGitDir {
				return nil, nil, cleanup, errors.New("inconsistent keep-git-dir configuration")
			}
			r.keepGit = (c.keepGitDir != nil && *c.keepGitDir) || (g.KeepGitDir != nil && *g.KeepGitDir)
			if c.checksum != "" && g.Checksum != "" && c.checksum != g.Checksum {
				return nil, nil, cleanup, fmt.Errorf("checksum mismatch %q != %q", c.checksum, g.Checksum)
			}
			r.agents = b.opt.SSH
			if r.commit, err = b.resolveGit(ctx, g, c.checksum); err != nil {
				return nil, nil, cleanup, err
			}
			continue
		}
		r.url = r.src
		r.name = source.URLFileName(r.src)
		if c.checksum != "" {
			if r.checksum, err = digest.Parse(c.checksum); err != nil {
				return nil, nil, cleanup, fmt.Errorf("--checksum=%s: %w (want sha256:<64 hex digits>)", c.checksum, err)
			}
			continue
		}
		if b.opt.Store == nil {
			return nil, nil, cleanup, errors.New("ADD of a URL needs kiln's store")
		}
		d, err := b.opt.Store.TempDir("download-")
		if err != nil {
			return nil, nil, cleanup, err
		}
		dirs = append(dirs, d)
		r.dir = d
		opts := source.HTTPOptions{Filename: r.name}
		rec, haveRec := b.httpRecord(r.url)
		if haveRec && rec.Name == r.name {
			opts.ETag = rec.ETag
		}
		if r.file, err = source.HTTP(ctx, r.url, d, opts); err != nil {
			return nil, nil, cleanup, err
		}
		if r.file.NotModified {
			r.file = source.File{Name: rec.Name, Digest: rec.Digest, ModTime: rec.ModTime, LastModified: rec.LastModified, ETag: rec.ETag}
			r.revalidated = true
		} else if r.file.ETag != "" {
			b.putHTTPRecord(r.url, r.file)
		}
	}
	return local, remotes, cleanup, nil
}

// resolveGit resolves g's ref on the remote, through the build's --ssh
// default agent for an ssh remote, served from a directory of the store's
// tmp.
func (b *build) resolveGit(ctx context.Context, g *source.GitRef, checksum string) (source.Resolved, error) {
	agentDir := ""
	if g.UsesSSH() && len(b.opt.SSH) > 0 && b.opt.Store != nil {
		d, err := b.opt.Store.TempDir("git-ssh-")
		if err != nil {
			return source.Resolved{}, err
		}
		defer os.RemoveAll(d)
		agentDir = d
	}
	return source.ResolveGit(ctx, g, checksum, source.WithSSHAgents(b.opt.SSH, agentDir))
}

// addKey adds what identifies r's content to the step key.
func (r *remoteSource) addKey(k *stepKey, i int) {
	p := "remote " + strconv.Itoa(i) + " "
	switch {
	case r.git != nil:
		k.add(p+"git", r.git.Remote)
		k.add(p+"commit", r.commit.Commit)
		k.add(p+"subdir", r.git.Subdir)
		k.add(p+"keep-git-dir", strconv.FormatBool(r.keepGit))
		k.note("git "+source.Redact(r.git.Remote), r.commit.Commit)
	case r.checksum != "":
		// BuildKit keys a pinned download by name and checksum only: the
		// same bytes from another URL are the same step.
		k.add(p+"file", r.name)
		k.add(p+"checksum", r.checksum.String())
		k.note("url "+source.Redact(r.url), r.checksum.Encoded())
	default:
		k.add(p+"file", r.name)
		k.add(p+"digest", r.file.Digest.String())
		if r.file.LastModified {
			k.add(p+"mtime", r.file.ModTime.UTC().Format("2006-01-02T15:04:05Z"))
		}
		k.note("url "+source.Redact(r.url), r.file.Digest.Encoded())
	}
}

// copy fetches r if that was left for when the step runs (a pinned
// download, a git checkout) into scratch, and copies it into rf with op's
// destination, owner and mode. A download is unpacked only with --unpack.
func (r *remoteSource) copy(ctx context.Context, rf executor.Rootfs, op copier.Op, scratch string, unpack bool) error {
	op.FromStage, op.Excludes, op.Verify, op.Expect = false, nil, false, nil
	op.Kind = "copy"
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return err
	}
	var srcDir string
	switch {
	case r.git != nil:
		srcDir = filepath.Join(scratch, "checkout")
		// The agent's socket goes in the step's own scratch directory.
		if err := source.Git(ctx, r.git, r.commit, srcDir, r.keepGit, source.WithSSHAgents(r.agents, scratch)); err != nil {
			return err
		}
		// A subdir of real directories only, as BuildKit's git source.
		if _, err := source.SubdirPath(srcDir, r.git.Subdir); err != nil {
			return fmt.Errorf("git source %s: %w", source.Redact(r.git.Remote), err)
		}
		op.Sources = []string{"/" + r.git.Subdir}
	default:
		srcDir = r.dir
		if want := r.checksum; want != "" || r.revalidated {
			if r.revalidated {
				want = r.file.Digest
			}
			srcDir = filepath.Join(scratch, "download")
			if err := os.Mkdir(srcDir, 0o700); err != nil {
				return err
			}
			if _, err := source.HTTP(ctx, r.url, srcDir, source.HTTPOptions{Filename: r.name, Checksum: want}); err != nil {
				if r.revalidated {
					return fmt.Errorf("%w (the server said the file was unchanged, then served other bytes: build again)", err)
				}
				return err
			}
		}
		op.Sources = []string{"/" + r.name}
		if unpack {
			op.Kind = "add"
		}
	}
	return executor.Copy(ctx, executor.CopySpec{Rootfs: rf, SourceDir: srcDir, Op: op})
}

// httpRecord is what kiln remembers of a download that had an entity tag,
// so that a rebuild revalidates it (If-None-Match) instead of downloading
// it again. Kept under ROOT/sources/http, one small file per URL digest.
type httpRecord struct {
	ETag         string        `json:"etag"`
	Digest       digest.Digest `json:"digest"`
	Name         string        `json:"name"`
	ModTime      time.Time     `json:"mtime"`
	LastModified bool          `json:"lastModified,omitempty"`
}

func (b *build) httpRecordPath(url string) string {
	if b.opt.Store == nil {
		return ""
	}
	return filepath.Join(b.opt.Store.Root, "sources", "http", digest.FromString(url).Encoded()+".json")
}

func (b *build) httpRecord(url string) (httpRecord, bool) {
	var rec httpRecord
	p := b.httpRecordPath(url)
	if p == "" {
		return rec, false
	}
	data, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(data, &rec) != nil || rec.ETag == "" || rec.Digest.Validate() != nil {
		return httpRecord{}, false
	}
	return rec, true
}

// putHTTPRecord remembers f; failing to is no error (the next build
// downloads again).
func (b *build) putHTTPRecord(url string, f source.File) {
	p := b.httpRecordPath(url)
	if p == "" {
		return
	}
	data, err := json.Marshal(httpRecord{ETag: f.ETag, Digest: f.Digest, Name: f.Name, ModTime: f.ModTime, LastModified: f.LastModified})
	if err != nil || os.MkdirAll(filepath.Dir(p), 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil && cerr == nil && os.Rename(tmp.Name(), p) == nil {
		return
	}
	os.Remove(tmp.Name())
}
