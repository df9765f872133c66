package planner

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kiln-build/kiln/layer"
)

// sourceDateEpochArg is the build arg that pins a build's timestamps
// (https://reproducible-builds.org/specs/source-date-epoch/).
const sourceDateEpochArg = "SOURCE_DATE_EPOCH"

// sourceDateEpoch reads SOURCE_DATE_EPOCH as BuildKit's Dockerfile frontend
// does: a --build-arg wins (even empty, which unsets it), else a non-empty
// default of a global ARG SOURCE_DATE_EPOCH. nil: no epoch.
func sourceDateEpoch(buildArgs map[string]string, global envList) (*time.Time, error) {
	v, ok := buildArgs[sourceDateEpochArg]
	if !ok {
		v, ok = global.Get(sourceDateEpochArg)
	}
	// BuildKit resolves "context" to a git or HTTP context's time and
	// leaves it unset for a local context, which is the only kind kiln has.
	if !ok || v == "" || v == "context" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want a number of seconds since 1970-01-01 UTC (date +%%s, or git log -1 --format=%%ct)", v)
	}
	tm := time.Unix(n, 0).UTC()
	return &tm, nil
}

// clampFor says how the layer of a step of this kind is written: under
// SOURCE_DATE_EPOCH, no mtime later than the epoch, unless the outputs
// asked to keep them (rewrite-timestamp=false). WORKDIR clamps whenever
// the epoch is set, as BuildKit creates the directory with the epoch as
// its time whatever the exporter does.
//
// A clamped layer has other bytes than the unclamped one, so the epoch
// joins the step's key: a layer cached without it (or with another epoch)
// is not reused.
func (b *build) clampFor(k *stepKey) layer.TarOptions {
	if b.epoch == nil || (b.opt.KeepTimestamps && k.kind != "workdir") {
		return layer.TarOptions{}
	}
	k.add("source-date-epoch", strconv.FormatInt(b.epoch.Unix(), 10))
	t := *b.epoch
	return layer.TarOptions{ClampMtime: &t}
}
