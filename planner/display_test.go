package planner

import (
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	bkparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// The titles are the ones BuildKit v0.34's plain progress prints for the
// same lines (compared with buildctl --progress=plain against the peers'
// buildkitd: loops, quotes, escapes, secrets, heredocs, COPY, WORKDIR).
func TestStepTitles(t *testing.T) {
	tests := []struct {
		line string
		env  envList
		want string
	}{
		{`RUN for i in 1 2 3; do echo line $i; done`, nil, `RUN for i in 1 2 3; do echo line $i; done`},
		{`RUN perl -e 'print "hi\n"'`, nil, `RUN perl -e 'print "hi\n"'`},
		{`RUN echo "$V" '$V' ${V} $UNSET`, envList{"V=x"}, `RUN echo "x" '$V' x $UNSET`},
		{`run echo hi`, nil, `RUN echo hi`},
		{`RUN --mount=type=secret,id=t,env=TOKEN echo $TOKEN`, envList{"TOKEN=plain"}, `RUN --mount=type=secret,id=t,env=TOKEN echo ****`},
		{"RUN <<EOF\necho a\necho b\nEOF", nil, `RUN <<EOF (echo a...)`},
		{"RUN <<EOF\necho a\nEOF", nil, `RUN <<EOF (echo a)`},
		{`COPY --chmod=644 $SRC "/d st/"`, envList{"SRC=a.txt"}, `COPY --chmod=644 a.txt /d st/`},
		{`copy a /b`, nil, `COPY a /b`},
		{`WORKDIR /app/$V`, envList{"V=x"}, `WORKDIR /app/x`},
	}
	for _, tt := range tests {
		res, err := bkparser.Parse(strings.NewReader(tt.line + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		cmd, err := instructions.ParseCommand(res.AST.Children[0])
		if err != nil {
			t.Fatal(err)
		}
		s := &stage{lex: shell.NewLex('\\'), env: tt.env}
		var got string
		switch c := cmd.(type) {
		case *instructions.RunCommand:
			// mounts are decoded when the words are expanded, as the
			// planner does before it titles the step
			if err := c.Expand(func(w string) (string, error) { return w, nil }); err != nil {
				t.Fatal(err)
			}
			got = runDisplay(s, c)
		default:
			got = wordDisplay(s, cmd.(interface{ String() string }).String())
		}
		if got != tt.want {
			t.Errorf("%q titled %q, want %q", tt.line, got, tt.want)
		}
	}
}
