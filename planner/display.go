package planner

import (
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Step titles are what BuildKit's progress prints for an instruction. They
// are for people only: no cache key is derived from them.

// runDisplay is the title of a RUN step as BuildKit writes it: the
// instruction as written, with variables the step can see substituted but
// quotes, escapes and unset variables ($i of a shell loop) kept, so the
// title reads like the Dockerfile line. Secrets mounted as env show as ****.
func runDisplay(s *stage, c *instructions.RunCommand) string {
	text := c.String()
	if len(c.Files) > 0 && len(c.CmdLine) == 1 && c.PrependShell {
		if bkparser.MustParseHeredoc(c.CmdLine[0]) != nil {
			text += " (" + summarizeHeredoc(c.Files[0].Data) + ")"
		}
	}
	lex := *s.lex
	lex.RawQuotes = true
	lex.RawEscapes = true
	lex.SkipUnsetEnv = true
	var env shell.EnvGetter = s.env
	if masked := secretEnvNames(c); len(masked) > 0 {
		env = maskedEnv{base: s.env, masked: masked}
	}
	return displayWith(&lex, text, env)
}

// wordDisplay is the title of a COPY, ADD or WORKDIR step: BuildKit expands
// those with the Dockerfile's ordinary word rules.
func wordDisplay(s *stage, text string) string {
	return displayWith(s.lex, text, s.env)
}

func displayWith(lex *shell.Lex, text string, env shell.EnvGetter) string {
	if w, _, err := lex.ProcessWord(text, env); err == nil {
		text = w
	}
	// "run echo" is titled "RUN echo": only the keyword is upper-cased.
	kw, rest, ok := strings.Cut(text, " ")
	if !ok {
		return strings.ToUpper(kw)
	}
	return strings.ToUpper(kw) + " " + rest
}

// summarizeHeredoc is the first line of a heredoc body, with "..." when
// there are more.
func summarizeHeredoc(doc string) string {
	lines := strings.Split(strings.ReplaceAll(strings.TrimSpace(doc), "\r\n", "\n"), "\n")
	if len(lines) > 1 {
		return lines[0] + "..."
	}
	return lines[0]
}

// secretEnvNames lists the variables RUN --mount=type=secret,env=NAME sets.
func secretEnvNames(c *instructions.RunCommand) map[string]bool {
	var out map[string]bool
	for _, m := range instructions.GetMounts(c) {
		if m.Type == instructions.MountTypeSecret && m.Env != nil {
			if out == nil {
				out = map[string]bool{}
			}
			out[*m.Env] = true
		}
	}
	return out
}

// maskedEnv hides secret values from a title.
type maskedEnv struct {
	base   shell.EnvGetter
	masked map[string]bool
}

func (m maskedEnv) Get(key string) (string, bool) {
	if m.masked[key] {
		return "****", true
	}
	return m.base.Get(key)
}

func (m maskedEnv) Keys() []string {
	keys := m.base.Keys()
	for k := range m.masked {
		if _, ok := m.base.Get(k); !ok {
			keys = append(keys, k)
		}
	}
	return keys
}
