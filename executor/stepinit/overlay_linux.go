package stepinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/userns"
	"github.com/kiln-build/kiln/rooted"
)

// overlayFixedOpts keep the upper dir a plain diff that the layer writer can
// tar as it is: no redirect xattrs for renamed directories (rename of a
// lower directory returns EXDEV and tools fall back to copying), no
// metadata-only copy-ups, no index of hard links into the lowers.
const overlayFixedOpts = "index=off,redirect_dir=off,metacopy=off"

// overlayUserxattrOpts replace overlayFixedOpts in a user namespace
// (rootless kiln), where overlay may not use trusted.* xattrs: userxattr
// keeps its bookkeeping, opaque directories among it, in user.overlay.*
// instead (Linux 5.11). With userxattr the kernel refuses
// redirect_dir=off where that means "follow" (redirect_always_follow);
// nofollow creates no redirects either.
const overlayUserxattrOpts = "index=off,redirect_dir=nofollow,metacopy=off,userxattr"

// fixedOpts are the options of every overlay mount of this process.
func fixedOpts() string {
	if userns.Running() {
		return overlayUserxattrOpts
	}
	return overlayFixedOpts
}

// Overlay describes one overlay mount.
type Overlay struct {
	// Stubs is our layer of missing mount points, stacked on top of
	// Lowers; "" for none.
	Stubs string
	// Lowers are the caller's layers, top-most first.
	Lowers []string
	// Empty is an empty directory: the only lower when there is none
	// (FROM scratch), and the bottom of a one-lower read-only view, since
	// overlay needs two lowers without an upper (an overlay rather than a
	// bind mount, so that whiteouts in the lower stay hidden).
	Empty string
	// Upper and Work are "" for a read-only view.
	Upper, Work string
	// Volatile asks overlay not to fsync copy-ups: a sandbox is
	// disposable, and the fsyncs cost more than the step on large
	// copy-ups.
	Volatile bool
}

// lowerdirs lists every lowerdir, top-most first, and which of them are
// the caller's layers (and so may be made relative to their common
// directory).
//
// A chain can hold the same layer twice (repeated empty layers in
// published images, two steps making the same change), and overlayfs
// refuses one directory at two positions (ELOOP). Only the top-most
// occurrence is kept, which gives the same view: every path the layer
// holds — whiteouts and opaque directories included — is answered by
// that occurrence before lookup can reach a lower copy, and a path the
// layer lacks gets nothing from the copy either.
func (o Overlay) lowerdirs() (dirs []string, callers []bool) {
	if o.Stubs != "" {
		dirs, callers = append(dirs, o.Stubs), append(callers, false)
	}
	seen := make(map[string]bool, len(o.Lowers))
	for _, l := range o.Lowers {
		key := filepath.Clean(l)
		if seen[key] {
			continue
		}
		seen[key] = true
		dirs, callers = append(dirs, l), append(callers, true)
	}
	if len(dirs) == 0 || (o.Upper == "" && len(dirs) == 1) {
		dirs, callers = append(dirs, o.Empty), append(callers, false)
	}
	return dirs, callers
}

// MountOverlay mounts o at target, read-only when it has no upper dir. It
// reports whether volatile was used: the kernel refuses it before Linux
// 5.10.
func MountOverlay(target string, o Overlay) (usedVolatile bool, err error) {
	var flags uintptr
	if o.Upper == "" {
		flags = unix.MS_RDONLY
		o.Volatile = false
	}
	data, dir, err := overlayOptions(o, unix.Getpagesize()-1)
	if err != nil {
		return false, fmt.Errorf("mounting overlay at %s: %w", target, err)
	}
	if dir != "" {
		// Relative lowerdirs are resolved against the mounter's working
		// directory; that is how a long list of layers fits in one page.
		if err := unix.Chdir(dir); err != nil {
			return false, fmt.Errorf("entering layer directory %s: %w", dir, err)
		}
		defer unix.Chdir("/")
	}
	if o.Volatile {
		err = unix.Mount("overlay", target, "overlay", flags, data+",volatile")
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return false, fmt.Errorf("mounting overlay at %s: %w", target, err)
		}
	}
	if err := unix.Mount("overlay", target, "overlay", flags, data); err != nil {
		if userns.Running() && errors.Is(err, unix.EINVAL) && !kernelAtLeast(5, 11) {
			return false, fmt.Errorf("mounting overlay at %s: %w (overlayfs in a user namespace, for a rootless build, needs Linux 5.11 or later)", target, err)
		}
		return false, fmt.Errorf("mounting overlay at %s: %w", target, err)
	}
	return false, nil
}

// MountStepTmpfs mounts a small tmpfs over the step directory, in the
// child's own mount namespace: mount points, the stub layer and the hosts
// file are created there at memory speed instead of as metadata writes on
// the build disk, and vanish with the namespace.
func MountStepTmpfs(stepDir string, dirs ...string) error {
	if err := MountFS("tmpfs", stepDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=700,size=64m"); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(stepDir, d), 0o755); err != nil {
			return fmt.Errorf("creating mount point: %w", err)
		}
	}
	return nil
}

// overlayOptions builds overlay's mount data. When the absolute lowerdirs do
// not fit in limit bytes (mount data is one page), the caller's layers are
// made relative to their deepest common directory, which the caller must
// chdir into before mounting; dir is that directory, or "" when not needed.
// Our own lowerdirs stay absolute: they live elsewhere, and overlay
// resolves each lowerdir on its own.
func overlayOptions(o Overlay, limit int) (data, dir string, err error) {
	dirs, callers := o.lowerdirs()
	build := func(base string) (string, error) {
		esc := make([]string, len(dirs))
		for i, l := range dirs {
			if base != "" && callers[i] {
				if l, err = filepath.Rel(base, l); err != nil {
					return "", err
				}
			}
			esc[i] = escapeOverlayPath(l)
		}
		var b strings.Builder
		b.WriteString("lowerdir=")
		b.WriteString(strings.Join(esc, ":"))
		if o.Upper != "" {
			b.WriteString(",upperdir=" + escapeOverlayPath(o.Upper))
			b.WriteString(",workdir=" + escapeOverlayPath(o.Work))
		}
		b.WriteString("," + fixedOpts())
		return b.String(), nil
	}
	// Leave room for ",volatile".
	limit -= len(",volatile")
	if data, err = build(""); err != nil || len(data) <= limit {
		return data, "", err
	}
	dir = commonDir(o.Lowers)
	if data, err = build(dir); err != nil {
		return "", "", err
	}
	if len(data) > limit {
		return "", "", fmt.Errorf("options for %d lowers exceed a page (%d bytes) even with relative paths", len(dirs), len(data))
	}
	return data, dir, nil
}

// escapeOverlayPath escapes the characters overlay treats as separators in
// its option string.
func escapeOverlayPath(p string) string {
	if !strings.ContainsAny(p, `\:,`) {
		return p
	}
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	return r.Replace(p)
}

// commonDir is the deepest directory containing all of paths (absolute and
// clean).
func commonDir(paths []string) string {
	dir := filepath.Dir(filepath.Clean(paths[0]))
	for _, p := range paths[1:] {
		p = filepath.Clean(p)
		for dir != "/" && !strings.HasPrefix(p, dir+"/") {
			dir = filepath.Dir(dir)
		}
	}
	return dir
}

// resolveInRoot resolves path inside root the way the sandboxed process
// will see it after pivot_root: symlinks are followed, but absolute targets
// and ".." are taken relative to root and can never leave it. This matters
// for mount targets: an image whose /etc/resolv.conf is a symlink to
// /etc/shadow or ../../../host must get a mount inside itself. It returns
// the resolved path relative to root and whether it exists; past the first
// missing component the rest is taken literally. root "" is an empty tree.
// The root is read as a raw layer: an overlay whiteout reads as absent.
func resolveInRoot(root, path string) (rel string, exists bool, err error) {
	if root == "" {
		return strings.TrimPrefix(rooted.Clean(path), "/"), false, nil
	}
	r, err := rooted.Open(root)
	if err != nil {
		return "", false, err
	}
	defer r.Close()
	r.Layer = true
	res, exists, err := r.Resolve(path, true)
	if err != nil {
		return "", false, err
	}
	return strings.TrimPrefix(res, "/"), exists, nil
}

// kernelAtLeast reports whether the running kernel is major.minor or
// later; true when the release cannot be read.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return true
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}
