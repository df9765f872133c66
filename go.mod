module github.com/kiln-build/kiln

go 1.26.8
