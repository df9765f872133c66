package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The levels an annotation can be put at, as buildx and BuildKit name
// them.
const (
	AnnotationManifest           = "manifest"            // the image manifest
	AnnotationIndex              = "index"               // the image index
	AnnotationManifestDescriptor = "manifest-descriptor" // the manifest's entry in the index (or in an OCI layout's index.json)
	AnnotationIndexDescriptor    = "index-descriptor"    // the index's entry in an OCI layout's index.json
)

var annotationTypes = []string{AnnotationManifest, AnnotationIndex, AnnotationManifestDescriptor, AnnotationIndexDescriptor}

// Annotation is one annotation of an output: Key=Value at level Type,
// for the manifests of Platform only when set (the "[linux/amd64]" of
// buildx's syntax).
type Annotation struct {
	Type     string
	Platform string
	Key      string
	Value    string
}

// AttrKey is the annotation as an output option, BuildKit's exporter
// spelling: annotation-TYPE[PLATFORM].KEY.
func (a Annotation) AttrKey() string {
	k := "annotation-" + a.Type
	if a.Platform != "" {
		k += "[" + a.Platform + "]"
	}
	return k + "." + a.Key
}

// flagAnnotationRE is buildx's --annotation key: [TYPES[PLATFORMS]:]KEY.
var flagAnnotationRE = regexp.MustCompile(`^(?:([a-z-]+(?:,[a-z-]+)*)(?:\[([A-Za-z0-9_/.-]+(?:,[A-Za-z0-9_/.-]+)*)\])?:)?(\S+)$`)

// ParseAnnotationFlags reads --annotation values in buildx's syntax:
// KEY=VALUE (a manifest annotation), or TYPE[PLATFORM]:KEY=VALUE with
// comma-separated types (manifest, index, manifest-descriptor,
// index-descriptor) and optional comma-separated platforms.
func ParseAnnotationFlags(list []string) ([]Annotation, error) {
	var out []Annotation
	for _, s := range list {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want KEY=VALUE or TYPE:KEY=VALUE", s)
		}
		g := flagAnnotationRE.FindStringSubmatch(k)
		if g == nil {
			return nil, fmt.Errorf("%q: want KEY=VALUE or TYPE[PLATFORM]:KEY=VALUE", s)
		}
		typeList, platList, key := g[1], g[2], g[3]
		types := []string{AnnotationManifest}
		if typeList != "" {
			types = strings.Split(typeList, ",")
		}
		plats := []string{""}
		if platList != "" {
			plats = strings.Split(platList, ",")
		}
		for _, t := range types {
			if !isAnnotationType(t) {
				return nil, fmt.Errorf("%q: unknown annotation type %q (want %s)", s, t, strings.Join(annotationTypes, ", "))
			}
			for _, p := range plats {
				np, err := normalizePlatform(p)
				if err != nil {
					return nil, fmt.Errorf("%q: %w", s, err)
				}
				out = append(out, Annotation{Type: t, Platform: np, Key: key, Value: v})
			}
		}
	}
	return out, nil
}

// attrAnnotationRE is BuildKit's exporter option key:
// annotation[-TYPE][[PLATFORM]].KEY.
var attrAnnotationRE = regexp.MustCompile(`^annotation(?:-([a-z-]+))?(?:\[([A-Za-z0-9_/.-]+)\])?\.(\S+)$`)

// isAnnotationAttr reports whether an output option is an annotation.
func isAnnotationAttr(k string) bool { return strings.HasPrefix(k, "annotation") }

// parseAnnotationAttr reads one annotation output option.
func parseAnnotationAttr(k, v string) (Annotation, error) {
	g := attrAnnotationRE.FindStringSubmatch(k)
	if g == nil {
		return Annotation{}, fmt.Errorf("%q: want annotation.KEY=VALUE or annotation-TYPE[PLATFORM].KEY=VALUE", k)
	}
	t := g[1]
	if t == "" {
		t = AnnotationManifest
	}
	if !isAnnotationType(t) {
		return Annotation{}, fmt.Errorf("%q: unknown annotation type %q (want %s)", k, t, strings.Join(annotationTypes, ", "))
	}
	p, err := normalizePlatform(g[2])
	if err != nil {
		return Annotation{}, fmt.Errorf("%q: %w", k, err)
	}
	return Annotation{Type: t, Platform: p, Key: g[3], Value: v}, nil
}

// annotationsOf returns the annotations an output's options ask for,
// sorted so that the same options always give the same bytes.
func annotationsOf(out Output) ([]Annotation, error) {
	var list []Annotation
	for k, v := range out.Attrs {
		if !isAnnotationAttr(k) {
			continue
		}
		a, err := parseAnnotationAttr(k, v)
		if err != nil {
			return nil, err
		}
		list = append(list, a)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].AttrKey() < list[j].AttrKey() })
	return list, nil
}

func isAnnotationType(t string) bool {
	for _, x := range annotationTypes {
		if t == x {
			return true
		}
	}
	return false
}

// normalizePlatform checks an OS/ARCH[/VARIANT] qualifier.
func normalizePlatform(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	pl, err := v1.ParsePlatform(p)
	if err != nil || pl.OS == "" || pl.Architecture == "" {
		return "", fmt.Errorf("platform %q: want OS/ARCH[/VARIANT], e.g. linux/amd64", p)
	}
	return pl.String(), nil
}

// annotationSet is the annotations of one output, by level.
type annotationSet []Annotation

// at returns the annotations of type t that apply to a manifest of
// platform plat (nil: those without a platform qualifier).
func (s annotationSet) at(t string, plat *v1.Platform) map[string]string {
	var m map[string]string
	for _, a := range s {
		if a.Type != t {
			continue
		}
		if a.Platform != "" && (plat == nil || !platformMatches(a.Platform, plat)) {
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		m[a.Key] = a.Value
	}
	return m
}

func (s annotationSet) has(types ...string) bool {
	for _, a := range s {
		for _, t := range types {
			if a.Type == t {
				return true
			}
		}
	}
	return false
}

func platformMatches(want string, p *v1.Platform) bool {
	w, err := v1.ParsePlatform(want)
	if err != nil {
		return false
	}
	return w.OS == p.OS && w.Architecture == p.Architecture && (w.Variant == "" || w.Variant == p.Variant)
}

// imagePlatform is the platform an image's config names.
func imagePlatform(img v1.Image) (*v1.Platform, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	return &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}, nil
}

// annotateManifest puts the manifest annotations that apply to img into
// its manifest, and its manifest-descriptor ones on the descriptor an OCI
// layout's index.json gives it. The config and layers stay the same
// bytes (the image ID does not change); the manifest digest does.
func annotateManifest(img v1.Image, s annotationSet) (v1.Image, error) {
	if len(s) == 0 {
		return img, nil
	}
	plat, err := imagePlatform(img)
	if err != nil {
		return nil, err
	}
	// A qualifier naming a platform the build did not produce is a
	// mistake, as in BuildKit.
	for _, a := range s {
		if a.Platform != "" && !platformMatches(a.Platform, plat) {
			return nil, fmt.Errorf("annotation %s: the build produced no %s image (it built %s)", a.AttrKey(), a.Platform, plat)
		}
	}
	if m := s.at(AnnotationManifest, plat); m != nil {
		mf, err := img.Manifest()
		if err != nil {
			return nil, fmt.Errorf("reading the manifest: %w", err)
		}
		am := mf.DeepCopy()
		if am.Annotations == nil {
			am.Annotations = map[string]string{}
		}
		maps.Copy(am.Annotations, m)
		raw, err := json.Marshal(am)
		if err != nil {
			return nil, fmt.Errorf("encoding the manifest: %w", err)
		}
		mt, err := img.MediaType()
		if err != nil {
			return nil, err
		}
		if img, err = partial.CompressedToImage(&remanifested{img: img, manifest: raw, mt: mt}); err != nil {
			return nil, err
		}
	}
	if m := s.at(AnnotationManifestDescriptor, plat); m != nil {
		img = &describedImage{Image: img, annotations: m}
	}
	return img, nil
}

// annotateIndex puts the index annotations into a's index and the
// manifest-descriptor ones on its image entries; index-descriptor ones go
// on the descriptor an OCI layout's index.json gives the index. Index
// levels need an index: as BuildKit, a single manifest refuses them.
func annotateIndex(a Artifact, s annotationSet) (Artifact, error) {
	if !s.has(AnnotationIndex, AnnotationIndexDescriptor, AnnotationManifestDescriptor) {
		return a, nil
	}
	idx, ok := a.(v1.ImageIndex)
	if !ok {
		if s.has(AnnotationIndex, AnnotationIndexDescriptor) {
			return nil, errors.New("index annotations need an image index, and this output holds a single image manifest: " +
				"an index comes with attestations (--provenance=true) or several platforms; or annotate the manifest instead (--annotation KEY=VALUE)")
		}
		return a, nil // manifest-descriptor: annotateManifest did it
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the index: %w", err)
	}
	im = im.DeepCopy()
	if m := s.at(AnnotationIndex, nil); m != nil {
		if im.Annotations == nil {
			im.Annotations = map[string]string{}
		}
		maps.Copy(im.Annotations, m)
	}
	for i, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS == "unknown" {
			continue // an attestation manifest
		}
		if m := s.at(AnnotationManifestDescriptor, d.Platform); m != nil {
			if d.Annotations == nil {
				im.Manifests[i].Annotations = map[string]string{}
			}
			maps.Copy(im.Manifests[i].Annotations, m)
		}
	}
	raw, err := json.Marshal(im)
	if err != nil {
		return nil, fmt.Errorf("encoding the index: %w", err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		return nil, err
	}
	return &annotatedIndex{base: idx, raw: raw, mt: mt, descriptor: s.at(AnnotationIndexDescriptor, nil)}, nil
}

// describedImage is an image whose descriptor in an OCI layout carries
// annotations (manifest-descriptor).
type describedImage struct {
	v1.Image
	annotations map[string]string
}

// annotatedIndex is an index rewritten with annotations over the same
// manifests. A named field, not an embedded v1.ImageIndex, whose
// ImageIndex method would clash with the field's name.
type annotatedIndex struct {
	base       v1.ImageIndex
	raw        []byte
	mt         types.MediaType
	descriptor map[string]string // index-descriptor annotations
}

func (x *annotatedIndex) MediaType() (types.MediaType, error) { return x.mt, nil }
func (x *annotatedIndex) Digest() (v1.Hash, error)            { return sha256Hash(x.raw), nil }
func (x *annotatedIndex) Size() (int64, error)                { return int64(len(x.raw)), nil }
func (x *annotatedIndex) RawManifest() ([]byte, error)        { return x.raw, nil }
func (x *annotatedIndex) IndexManifest() (*v1.IndexManifest, error) {
	var m v1.IndexManifest
	if err := json.Unmarshal(x.raw, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
func (x *annotatedIndex) Image(h v1.Hash) (v1.Image, error) { return x.base.Image(h) }
func (x *annotatedIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return x.base.ImageIndex(h)
}

// descriptorAnnotations are the annotations of a's own descriptor where
// an OCI layout's index.json lists it.
func descriptorAnnotations(a Artifact) map[string]string {
	switch a := a.(type) {
	case *describedImage:
		return maps.Clone(a.annotations)
	case *annotatedIndex:
		return maps.Clone(a.descriptor)
	}
	return nil
}

// Annotate applies an output's annotation options (Attrs) around attach,
// which turns the image into what is written (Attach: the image, or an
// index with its attestations): manifest levels before the attestations,
// which name the annotated manifest's digest; index levels after.
func Annotate(img v1.Image, out Output, attach func(v1.Image) (Artifact, error)) (Artifact, error) {
	return annotate(img, out, attach)
}

func annotate(img v1.Image, out Output, attach func(v1.Image) (Artifact, error)) (Artifact, error) {
	list, err := annotationsOf(out)
	if err != nil {
		return nil, err
	}
	s := annotationSet(list)
	if img, err = annotateManifest(img, s); err != nil {
		return nil, err
	}
	a, err := attach(img)
	if err != nil {
		return nil, err
	}
	return annotateIndex(a, s)
}
