// Command kiln builds container images from Dockerfiles without a daemon.
package main

func main() {}
