package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-build/kiln/export"
	"github.com/kiln-build/kiln/parser"
)

// ciDir holds the CI examples docs/ci.md shows.
const ciDir = "../../docs/ci"

// TestCIExamples keeps docs/ci from drifting: each file parses and has the
// shape its CI system wants, and every kiln command line in it parses with
// kiln's own commands and flags; each example builds with a registry cache
// in and out, and pushes.
func TestCIExamples(t *testing.T) {
	for _, tc := range []struct {
		file     string
		commands func(t *testing.T, doc []byte) [][]string
	}{
		{"github-actions.yml", githubCommands},
		{"gitlab-ci.yml", gitlabCommands},
		{"kubernetes-job.yaml", kubernetesCommands(true)},
		{"kubernetes-job-privileged.yaml", kubernetesCommands(false)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join(ciDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			cmds := tc.commands(t, doc)
			var builds []*cobra.Command
			for _, args := range cmds {
				if c := checkKilnCommand(t, args); c != nil && c.Name() == "build" {
					builds = append(builds, c)
				}
			}
			if len(builds) == 0 {
				t.Fatalf("no kiln build command in %s; found %q", tc.file, cmds)
			}
			var cacheTo, cacheFrom, push bool
			for _, b := range builds {
				for _, v := range flagValues(b, "cache-to") {
					cacheTo = cacheTo || strings.HasPrefix(v, "type=registry,ref=") && strings.Contains(v, ",mode=max")
				}
				for _, v := range flagValues(b, "cache-from") {
					cacheFrom = cacheFrom || strings.HasPrefix(v, "type=registry,ref=")
				}
				push = push || b.Flags().Changed("push")
			}
			if !cacheTo || !cacheFrom || !push {
				t.Errorf("want a kiln build with --cache-to type=registry,ref=…,mode=max, --cache-from type=registry,ref=… and --push; got --cache-to %v, --cache-from %v, --push %v", cacheTo, cacheFrom, push)
			}
		})
	}
	t.Run("ci.md", func(t *testing.T) {
		md, err := os.ReadFile(filepath.Join(ciDir, "..", "ci.md"))
		if err != nil {
			t.Fatal(err)
		}
		// The page shows the files as they are.
		for _, f := range []string{"github-actions.yml", "gitlab-ci.yml", "kubernetes-job.yaml", "kubernetes-job-privileged.yaml", "Dockerfile"} {
			b, err := os.ReadFile(filepath.Join(ciDir, f))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(md), "\n"+string(b)+"```\n") {
				t.Errorf("docs/ci.md does not show docs/ci/%s as it is", f)
			}
		}
		// And its shell examples are real kiln commands.
		n := 0
		for _, block := range shBlock.FindAllStringSubmatch(string(md), -1) {
			for _, args := range kilnCommands(t, block[1]) {
				checkKilnCommand(t, args)
				n++
			}
		}
		if n == 0 {
			t.Error("no kiln command in the sh blocks of docs/ci.md")
		}
	})
	t.Run("Dockerfile", func(t *testing.T) {
		src, err := os.ReadFile(filepath.Join(ciDir, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parser.Parse("Dockerfile", src); err != nil {
			t.Fatal(err)
		}
	})
}

// checkKilnCommand parses one kiln command line (args[0] is "kiln") as
// kiln would and returns the command it runs, with its flags set.
func checkKilnCommand(t *testing.T, args []string) *cobra.Command {
	t.Helper()
	root := newRootCmd()
	c, rest, err := root.Find(args[1:])
	if err != nil || c == root {
		t.Errorf("%q: not a kiln command: %v", args, err)
		return nil
	}
	if err := c.ParseFlags(rest); err != nil {
		t.Errorf("%q: %v", args, err)
		return nil
	}
	if c.Args != nil {
		if err := c.Args(c, c.Flags().Args()); err != nil {
			t.Errorf("%q: %v", args, err)
			return nil
		}
	}
	if c.Name() == "build" {
		outs, _ := c.Flags().GetStringArray("output")
		if _, err := export.ParseOutputs(outs); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		to, _ := c.Flags().GetStringArray("cache-to")
		if _, err := parseCacheTo(to); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		from, _ := c.Flags().GetStringArray("cache-from")
		if _, err := parseCacheFrom(from); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	return c
}

func flagValues(c *cobra.Command, name string) []string {
	v, _ := c.Flags().GetStringArray(name)
	return v
}

func githubCommands(t *testing.T, doc []byte) [][]string {
	var wf struct {
		Name string         `yaml:"name"`
		On   map[string]any `yaml:"on"`
		Jobs map[string]struct {
			RunsOn string `yaml:"runs-on"`
			Steps  []struct {
				Name string            `yaml:"name"`
				Uses string            `yaml:"uses"`
				Run  string            `yaml:"run"`
				With map[string]string `yaml:"with"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(doc, &wf); err != nil {
		t.Fatal(err)
	}
	if wf.Name == "" || len(wf.On) == 0 || len(wf.Jobs) == 0 {
		t.Fatalf("want a workflow with name, on and jobs: %+v", wf)
	}
	var cmds [][]string
	for name, job := range wf.Jobs {
		if job.RunsOn == "" || len(job.Steps) == 0 {
			t.Errorf("job %s: want runs-on and steps", name)
		}
		for i, s := range job.Steps {
			if (s.Uses == "") == (s.Run == "") {
				t.Errorf("job %s, step %d: want exactly one of uses and run", name, i)
			}
			cmds = append(cmds, kilnCommands(t, s.Run)...)
		}
	}
	return cmds
}

func gitlabCommands(t *testing.T, doc []byte) [][]string {
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(doc, &top); err != nil {
		t.Fatal(err)
	}
	var stages []string
	if n, ok := top["stages"]; !ok || n.Decode(&stages) != nil || len(stages) == 0 {
		t.Fatal("want a list of stages")
	}
	var cmds [][]string
	jobs := 0
	for name, n := range top {
		if strings.HasPrefix(name, ".") {
			continue // a template
		}
		if slices.Contains(gitlabKeywords, name) {
			if name != "stages" && name != "variables" && name != "default" && name != "workflow" {
				t.Errorf("top-level %s: a job name here would be taken as the global keyword", name)
			}
			continue
		}
		var job struct {
			Stage        string   `yaml:"stage"`
			Image        string   `yaml:"image"`
			BeforeScript []string `yaml:"before_script"`
			Script       []string `yaml:"script"`
		}
		if err := n.Decode(&job); err != nil {
			t.Fatalf("job %s: %v", name, err)
		}
		if !slices.Contains(stages, job.Stage) || job.Image == "" || len(job.Script) == 0 {
			t.Errorf("job %s: want one of the stages %q, an image and a script", name, stages)
		}
		jobs++
		for _, line := range append(job.BeforeScript, job.Script...) {
			cmds = append(cmds, kilnCommands(t, line)...)
		}
	}
	if jobs == 0 {
		t.Fatal("no job")
	}
	return cmds
}

// kubernetesCommands checks a batch/v1 Job running kiln rootless (as a
// user, in the pod's user namespace, with what that needs) or privileged,
// and returns its containers' kiln commands.
func kubernetesCommands(rootless bool) func(t *testing.T, doc []byte) [][]string {
	return func(t *testing.T, doc []byte) [][]string {
		type container struct {
			Name            string   `yaml:"name"`
			Image           string   `yaml:"image"`
			Command         []string `yaml:"command"`
			Args            []string `yaml:"args"`
			SecurityContext *struct {
				Privileged               *bool  `yaml:"privileged"`
				RunAsUser                *int64 `yaml:"runAsUser"`
				AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
				ProcMount                string `yaml:"procMount"`
				SeccompProfile           struct {
					Type string `yaml:"type"`
				} `yaml:"seccompProfile"`
				AppArmorProfile struct {
					Type string `yaml:"type"`
				} `yaml:"appArmorProfile"`
			} `yaml:"securityContext"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		}
		var job struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Spec       struct {
				Template struct {
					Spec struct {
						RestartPolicy  string      `yaml:"restartPolicy"`
						HostUsers      *bool       `yaml:"hostUsers"`
						InitContainers []container `yaml:"initContainers"`
						Containers     []container `yaml:"containers"`
						Volumes        []struct {
							Name     string    `yaml:"name"`
							EmptyDir *struct{} `yaml:"emptyDir"`
						} `yaml:"volumes"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal(doc, &job); err != nil {
			t.Fatal(err)
		}
		if job.APIVersion != "batch/v1" || job.Kind != "Job" {
			t.Fatalf("want a batch/v1 Job, got %s %s", job.APIVersion, job.Kind)
		}
		pod := job.Spec.Template.Spec
		if pod.RestartPolicy != "Never" && pod.RestartPolicy != "OnFailure" {
			t.Errorf("a Job's pod needs restartPolicy Never or OnFailure, got %q", pod.RestartPolicy)
		}
		emptyDirs := map[string]bool{}
		for _, v := range pod.Volumes {
			emptyDirs[v.Name] = v.EmptyDir != nil
		}
		var cmds [][]string
		for _, c := range append(pod.InitContainers, pod.Containers...) {
			line := append(slices.Clone(c.Command), c.Args...)
			if len(line) == 0 || line[0] != "kiln" {
				continue
			}
			cmds = append(cmds, line)
			sc := c.SecurityContext
			if sc == nil {
				t.Fatalf("container %s: no securityContext", c.Name)
			}
			if rootless {
				switch {
				case sc.RunAsUser == nil || *sc.RunAsUser == 0:
					t.Errorf("container %s: rootless wants runAsUser of a normal user", c.Name)
				case sc.Privileged != nil && *sc.Privileged:
					t.Errorf("container %s: rootless but privileged", c.Name)
				case sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation:
					t.Errorf("container %s: newuidmap and newgidmap are setuid: allowPrivilegeEscalation must not be false", c.Name)
				case sc.ProcMount != "Unmasked" || pod.HostUsers == nil || *pod.HostUsers:
					t.Errorf("container %s: RUN steps mount a fresh /proc: want procMount Unmasked, which needs hostUsers: false", c.Name)
				case sc.SeccompProfile.Type != "Unconfined" || sc.AppArmorProfile.Type != "Unconfined":
					t.Errorf("container %s: want seccomp and AppArmor Unconfined, for user namespaces and mounts", c.Name)
				}
			} else if sc.Privileged == nil || !*sc.Privileged {
				t.Errorf("container %s: want privileged", c.Name)
			}
			// --root on an emptyDir: overlayfs cannot take its upper
			// layer on the container's overlay root.
			root := ""
			for i, a := range line {
				if v, ok := strings.CutPrefix(a, "--root="); ok {
					root = v
				} else if a == "--root" && i+1 < len(line) {
					root = line[i+1]
				}
			}
			onEmptyDir := false
			for _, m := range c.VolumeMounts {
				onEmptyDir = onEmptyDir || m.MountPath == root && emptyDirs[m.Name]
			}
			if !onEmptyDir {
				t.Errorf("container %s: want --root on an emptyDir volume, got --root %q", c.Name, root)
			}
		}
		return cmds
	}
}

// kilnCommands finds the kiln command lines in a shell script: a command
// of a pipeline, list or if/else whose first word, after sudo, exec or
// variable assignments, is kiln. Words are split as the shell splits them
// for what the examples use (quotes, backslash-newline, ${{ … }}
// expressions); variables are left as they are.
func kilnCommands(t *testing.T, script string) [][]string {
	t.Helper()
	var out [][]string
	for _, cmd := range shellCommands(t, strings.ReplaceAll(script, "\\\n", " ")) {
		for len(cmd) > 0 && (cmd[0] == "sudo" || cmd[0] == "exec" || cmd[0] == "then" || cmd[0] == "else" || assignment.MatchString(cmd[0])) {
			cmd = cmd[1:]
		}
		if len(cmd) > 0 && cmd[0] == "kiln" {
			out = append(out, cmd)
		}
	}
	return out
}

// gitlabKeywords are GitLab CI's global keywords, which no job may be
// named.
var gitlabKeywords = []string{"default", "include", "stages", "variables", "workflow", "image", "services", "cache", "before_script", "after_script", "spec"}

var shBlock = regexp.MustCompile("(?s)```sh\n(.*?)```")

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// shellCommands splits script into simple commands (at newlines, ;, |,
// && and ||) made of words.
func shellCommands(t *testing.T, script string) [][]string {
	t.Helper()
	var cmds [][]string
	var cmd []string
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			cmd = append(cmd, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(cmd) > 0 {
			cmds = append(cmds, cmd)
		}
		cmd = nil
	}
	for i := 0; i < len(script); i++ {
		switch ch := script[i]; {
		case ch == '\'' || ch == '"':
			j := strings.IndexByte(script[i+1:], ch)
			if j < 0 {
				t.Fatalf("unterminated quote in %q", script)
			}
			word.WriteString(script[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case strings.HasPrefix(script[i:], "${{"):
			j := strings.Index(script[i:], "}}")
			if j < 0 {
				t.Fatalf("unterminated ${{ in %q", script)
			}
			word.WriteString(script[i : i+j+2])
			inWord = true
			i += j + 1
		case ch == ' ' || ch == '\t':
			endWord()
		case ch == '\n' || ch == ';' || ch == '|' || ch == '&':
			endCmd()
		default:
			word.WriteByte(ch)
			inWord = true
		}
	}
	endCmd()
	return cmds
}
