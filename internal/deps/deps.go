// Package deps pins the modules kiln is built on until every package imports them.
package deps
import (
 _ "github.com/moby/buildkit/frontend/dockerfile/parser"
 _ "github.com/moby/buildkit/frontend/dockerfile/instructions"
 _ "github.com/moby/buildkit/frontend/dockerfile/shell"
 _ "github.com/google/go-containerregistry/pkg/v1/remote"
 _ "github.com/google/go-containerregistry/pkg/v1/layout"
 _ "github.com/google/go-containerregistry/pkg/v1/tarball"
 _ "github.com/google/go-containerregistry/pkg/v1/validate"
 _ "github.com/google/go-containerregistry/pkg/registry"
 _ "github.com/google/go-containerregistry/pkg/authn"
 _ "golang.org/x/sync/errgroup"
 _ "golang.org/x/sys/unix"
 _ "github.com/moby/patternmatcher"
 _ "github.com/moby/patternmatcher/ignorefile"
 _ "github.com/klauspost/compress/gzip"
 _ "github.com/klauspost/compress/zstd"
 _ "github.com/spf13/cobra"
 _ "github.com/ulikunitz/xz"
)
