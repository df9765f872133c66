#!/bin/sh
# Prints what the build stage made of greeting.txt.
echo "$(cat /srv/hello/shout.txt) ($(tr -d ' ' < /srv/hello/size.txt) bytes)"
