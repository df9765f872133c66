#!/bin/sh
echo "hello from @TARGET@, built on @BUILD@"
