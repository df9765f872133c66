package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/cache"
	"github.com/kiln-build/kiln/executor"
	"github.com/kiln-build/kiln/executor/seccomp"
	"github.com/kiln-build/kiln/internal/userns"
	"github.com/kiln-build/kiln/progress"
	"github.com/kiln-build/kiln/registry"
)

// infoCommands are the commands that describe kiln and its host rather
// than build: version, info, completion.
func infoCommands(root *string) []*cobra.Command {
	return []*cobra.Command{newVersionCmd(), newInfoCmd(root), newCompletionCmd()}
}

// Set at link time by `make build` (git describe and rev-parse; see
// make print-ldflags) and release builds:
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.gitCommit=$(git rev-parse HEAD)"
//
// Otherwise they come from the module and VCS data Go records, when it
// does (not with -buildvcs=false, nor in `go run`).
var version, gitCommit string

// versionInfo is what `kiln version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	BuildTime string `json:"buildTime,omitempty"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	// SandboxInit is the program that runs as PID 1 of RUN steps.
	SandboxInit string   `json:"sandboxInit"`
	Host        hostInfo `json:"host"`
}

func currentVersion() versionInfo {
	v := versionInfo{Version: version, GitCommit: gitCommit, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		SandboxInit: executor.SandboxInit()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.GitCommit == "" {
					v.GitCommit = s.Value
				}
			case "vcs.time":
				v.BuildTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if strings.HasSuffix(v.Version, "-dirty") {
		v.Modified = true // git describe --dirty, as make build stamps it
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	if v.GitCommit == "" {
		v.GitCommit = "unknown"
	}
	return v
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print kiln's version and the host features it found",
		Long: `Print kiln's version, git commit, Go version and platform, and what kiln
found on this host: overlayfs, the cgroup version and controllers (for
--memory and friends), user namespaces and seccomp. Paste it into bug
reports.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if remoteHost(cmd) != "" {
				return runRemoteVersion(cmd, asJSON)
			}
			v := currentVersion()
			v.Host = detectHost(os.DirFS("/"))
			v.Host.addKilnFacts()
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			printVersion(cmd.OutOrStdout(), v)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printVersion(w io.Writer, v versionInfo) {
	commit := v.GitCommit
	if v.Modified {
		commit += " (modified)"
	}
	rows := [][2]string{
		{"Version", v.Version},
		{"Git commit", commit},
	}
	if v.BuildTime != "" {
		rows = append(rows, [2]string{"Commit time", v.BuildTime})
	}
	rows = append(rows, [2]string{"Go version", v.GoVersion}, [2]string{"OS/Arch", v.OS + "/" + v.Arch},
		[2]string{"Sandbox init", v.SandboxInit})
	fmt.Fprintln(w, "kiln:")
	table(w, rows)
	fmt.Fprintln(w, "Host:")
	table(w, v.Host.rows())
}

// table writes "  key:  value" rows with the values aligned.
func table(w io.Writer, rows [][2]string) {
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s %s\n", width+1, r[0]+":", r[1])
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments", cmd.Name())
	}
	return nil
}

// hostInfo is what kiln relies on from the kernel, as found in /proc and
// /sys. A feature that cannot be read is reported missing, not an error:
// the point is to explain why a build fails on this host.
type hostInfo struct {
	Kernel            string   `json:"kernel,omitempty"`
	Root              bool     `json:"root"`     // kiln needs root for namespaces and overlay mounts
	Rootless          bool     `json:"rootless"` // root only of a user namespace: the user's subuid range
	Overlayfs         bool     `json:"overlayfs"`
	Cgroup            string   `json:"cgroup"` // v2, v1, hybrid (v1 with a v2 hierarchy) or none
	CgroupControllers []string `json:"cgroupControllers,omitempty"`
	UserNamespaces    bool     `json:"userNamespaces"`
	// UnprivilegedUserNamespaces is false when a sysctl keeps them to root
	// (Debian's kernel.unprivileged_userns_clone, Ubuntu's AppArmor one).
	UnprivilegedUserNamespaces bool `json:"unprivilegedUserNamespaces"`
	Seccomp                    bool `json:"seccomp"`
	// SeccompFiltered is true when kiln itself runs under a seccomp
	// filter, as inside a container: some syscalls of the sandbox may be
	// refused.
	SeccompFiltered bool `json:"seccompFiltered,omitempty"`
	// SeccompTable names the architecture whose system call table kiln
	// carries ("" when it has none: RUN then needs --allow
	// security.noseccomp); NetworkHelpers are the user-mode network
	// programs RUN's default network can use, in the order it tries
	// them. Both are kiln's own facts, filled outside detectHost.
	SeccompTable   string   `json:"seccompTable,omitempty"`
	NetworkHelpers []string `json:"networkHelpers,omitempty"`
	hostFacts      bool
}

// detectHost reads fsys, the host's "/" (a test's fake one).
func detectHost(fsys fs.FS) hostInfo {
	var h hostInfo
	h.Kernel = readLine(fsys, "proc/sys/kernel/osrelease")
	h.Root = os.Geteuid() == 0
	h.Rootless = userns.Running()
	if data, err := fs.ReadFile(fsys, "proc/filesystems"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == "overlay" {
				h.Overlayfs = true
			}
		}
	}
	h.Cgroup = "none"
	if data, err := fs.ReadFile(fsys, "proc/self/mounts"); err == nil {
		v1, v2, unified := false, false, false
		var v1Controllers []string
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 3 {
				continue
			}
			switch {
			case f[2] == "cgroup2" && f[1] == "/sys/fs/cgroup":
				v2 = true
			case f[2] == "cgroup2":
				unified = true
			case f[2] == "cgroup":
				v1 = true
				// a v1 hierarchy is named after its controllers
				// (cpu,cpuacct), or is a named one without any
				if len(f) > 3 && !strings.Contains(f[3], "name=") {
					v1Controllers = append(v1Controllers, filepath.Base(f[1]))
				}
			}
		}
		switch {
		case v2:
			h.Cgroup = "v2"
			h.CgroupControllers = strings.Fields(readLine(fsys, "sys/fs/cgroup/cgroup.controllers"))
		case v1 && unified:
			h.Cgroup = "hybrid"
			h.CgroupControllers = v1Controllers
		case v1:
			h.Cgroup = "v1"
			h.CgroupControllers = v1Controllers
		}
	}
	if n, err := strconv.Atoi(readLine(fsys, "proc/sys/user/max_user_namespaces")); err == nil && n > 0 {
		h.UserNamespaces = true
		h.UnprivilegedUserNamespaces = readLine(fsys, "proc/sys/kernel/unprivileged_userns_clone") != "0" &&
			readLine(fsys, "proc/sys/kernel/apparmor_restrict_unprivileged_userns") != "1"
	}
	if f, err := fsys.Open("proc/self/status"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Seccomp:"); ok {
				h.Seccomp = true // the field exists only with CONFIG_SECCOMP
				h.SeccompFiltered = strings.TrimSpace(v) == "2"
			}
		}
		f.Close()
	}
	return h
}

func (h hostInfo) rows() [][2]string {
	yes := func(b bool, no string) string {
		if b {
			return "yes"
		}
		return no
	}
	cg := h.Cgroup
	if len(h.CgroupControllers) > 0 {
		cg += " (controllers: " + strings.Join(h.CgroupControllers, " ") + ")"
	}
	if h.Cgroup == "none" {
		cg = "none: resource limits are unavailable"
	}
	userns := yes(h.UserNamespaces, "no")
	if h.UserNamespaces && !h.UnprivilegedUserNamespaces {
		userns += " (for root only)"
	}
	seccomp := yes(h.Seccomp, "no")
	if h.SeccompFiltered {
		seccomp += " (kiln itself runs under a filter, as in a container)"
	}
	kernel := h.Kernel
	if kernel == "" {
		kernel = "unknown"
	}
	rows := [][2]string{
		{"Kernel", kernel},
		{"Running as root", rootLine(h)},
		{"Overlayfs", yes(h.Overlayfs, "no: load it with modprobe overlay")},
		{"Cgroups", cg},
		{"User namespaces", userns},
		{"Seccomp", seccomp},
	}
	if h.hostFacts {
		table := "none for " + runtime.GOARCH + ": RUN steps need --allow security.noseccomp"
		if h.SeccompTable != "" {
			table = h.SeccompTable
		}
		network := "none: RUN's default network needs passt (apt-get install passt) or slirp4netns"
		if len(h.NetworkHelpers) > 0 {
			network = strings.Join(h.NetworkHelpers, ", then ")
		}
		rows = append(rows, [2]string{"Seccomp table", table}, [2]string{"RUN network helper", network})
	}
	return rows
}

// addKilnFacts adds what this kiln binary can do on the host: its
// seccomp table and the network helpers it finds.
func (h *hostInfo) addKilnFacts() {
	h.hostFacts = true
	if seccomp.Supported() {
		h.SeccompTable = seccomp.Arch()
	}
	h.NetworkHelpers, _ = executor.NetworkHelpers()
}

func readLine(fsys fs.FS, name string) string {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// storeInfo is what `kiln info` says about the store.
type storeInfo struct {
	Path    string           `json:"path"`
	Exists  bool             `json:"exists"`
	Usage   *cache.DiskUsage `json:"usage,omitempty"`
	Logs    int              `json:"logBuilds"`
	LogSize int64            `json:"logSize"`
}

type infoReport struct {
	Store      storeInfo                      `json:"store"`
	Config     string                         `json:"config"`
	ConfigRead bool                           `json:"configRead"`
	Registries map[string]registry.HostConfig `json:"registries"`
	Emulation  emulationInfo                  `json:"emulation"`
}

func newInfoCmd(root *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show the store, the config file and the registries kiln uses",
		Long: `Show where kiln keeps its store (--root, env KILN_ROOT) and how much it
holds, including the logs of recent builds, which config file it reads
(env KILN_CONFIG) and the registry settings found there.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := gatherInfo(*root)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			printInfo(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func gatherInfo(root string) (infoReport, error) {
	var r infoReport
	abs, err := filepath.Abs(root)
	if err != nil {
		return r, fmt.Errorf("finding the store: %w", err)
	}
	r.Store.Path = abs
	r.Emulation = gatherEmulation()
	// info only looks: it must not create a store where there is none,
	// as cache.Open would (in /tmp, say, after a wrong --root)
	if _, err := os.Stat(filepath.Join(abs, "blobs")); err == nil {
		r.Store.Exists = true
		st, err := cache.Open(abs)
		if err != nil {
			return r, fmt.Errorf("opening kiln's store at %s (set --root or KILN_ROOT): %w", abs, err)
		}
		du, err := st.DiskUsage()
		if err != nil {
			return r, fmt.Errorf("measuring the store: %w", err)
		}
		r.Store.Usage = &du
		r.Store.Logs, r.Store.LogSize = logsUsage(filepath.Join(abs, "logs"))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("finding the store: %w", err)
	}
	r.Config = registry.ConfigPath()
	if _, err := os.Stat(r.Config); err == nil {
		r.ConfigRead = true
	}
	cfg, err := registry.LoadConfig(r.Config)
	if err != nil {
		return r, err
	}
	r.Registries = cfg.Registry
	if r.Registries == nil {
		r.Registries = map[string]registry.HostConfig{}
	}
	return r, nil
}

// logsUsage counts the build log directories under dir and their bytes.
func logsUsage(dir string) (builds int, size int64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		builds++
		filepath.WalkDir(filepath.Join(dir, e.Name()), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					size += fi.Size()
				}
			}
			return nil
		})
	}
	return builds, size
}

func printInfo(w io.Writer, r infoReport) {
	hb := progress.HumanBytes
	fmt.Fprintln(w, "Store:")
	rows := [][2]string{{"Path", r.Store.Path}}
	if !r.Store.Exists {
		rows = append(rows, [2]string{"Size", "nothing yet: the first build creates it"})
	}
	if u := r.Store.Usage; u != nil {
		rows = append(rows,
			[2]string{"Size", fmt.Sprintf("%s (%s reclaimable)", hb(u.Total.Size+r.Store.LogSize), hb(u.Total.Reclaimable))},
			[2]string{"Layers", fmt.Sprintf("%d unpacked, %s", u.Layers.Count, hb(u.Layers.Size))},
			[2]string{"Blobs", fmt.Sprintf("%d, %s", u.Blobs.Count, hb(u.Blobs.Size))},
			[2]string{"Step records", fmt.Sprintf("%d", u.Steps.Count)},
			[2]string{"Named images", fmt.Sprintf("%d", u.Images.Count)},
			[2]string{"Build logs", fmt.Sprintf("%d %s, %s (the newest %d are kept)", r.Store.Logs, plural(r.Store.Logs, "build", "builds"), hb(r.Store.LogSize), progress.KeepLogs)},
		)
		if u.Tmp.Size > 0 {
			rows = append(rows, [2]string{"Scratch", hb(u.Tmp.Size)})
		}
	}
	table(w, rows)
	printEmulation(w, r.Emulation)
	state := "read"
	if !r.ConfigRead {
		state = "not present"
	}
	fmt.Fprintf(w, "Config file: %s (%s)\n", r.Config, state)
	if len(r.Registries) == 0 {
		fmt.Fprintln(w, "Registries: none configured")
		return
	}
	fmt.Fprintln(w, "Registries:")
	hosts := make([]string, 0, len(r.Registries))
	for h := range r.Registries {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var hrows [][2]string
	for _, h := range hosts {
		hrows = append(hrows, [2]string{h, hostSummary(r.Registries[h])})
	}
	table(w, hrows)
}

// hostSummary is one registry's settings on a line.
func hostSummary(c registry.HostConfig) string {
	var parts []string
	if len(c.Mirrors) > 0 {
		parts = append(parts, "mirrors "+strings.Join(c.Mirrors, ", "))
	}
	if c.HTTP {
		parts = append(parts, "plain HTTP")
	}
	if c.Insecure {
		parts = append(parts, "TLS not verified")
	}
	if len(c.CA) > 0 {
		parts = append(parts, fmt.Sprintf("%d CA %s", len(c.CA), plural(len(c.CA), "file", "files")))
	}
	if len(c.KeyPairs) > 0 {
		parts = append(parts, fmt.Sprintf("%d client %s", len(c.KeyPairs), plural(len(c.KeyPairs), "certificate", "certificates")))
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, "; ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

var shells = []string{"bash", "zsh", "fish"}

// newCompletionCmd replaces cobra's default completion command, to refuse
// an unknown shell as a usage error (exit 2) and to say how to install.
func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print the shell completion script",
		Long: `Print the completion script for a shell. To load completions:

  bash:  source <(kiln completion bash)
         or, for every session: kiln completion bash > /etc/bash_completion.d/kiln
  zsh:   kiln completion zsh > "${fpath[1]}/_kiln"   (with compinit enabled)
  fish:  kiln completion fish > ~/.config/fish/completions/kiln.fish`,
		ValidArgs:             shells,
		DisableFlagsInUseLine: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || !slices.Contains(shells, args[0]) {
				return usagef("completion takes one shell: %s", strings.Join(shells, ", "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			default:
				return root.GenFishCompletion(out, true)
			}
		},
	}
}

func rootLine(h hostInfo) string {
	switch {
	case h.Rootless:
		return "rootless: root of a user namespace mapped to the user's subuid/subgid ranges"
	case h.Root:
		return "yes"
	}
	return "no: builds re-run kiln in a user namespace (rootless)"
}
