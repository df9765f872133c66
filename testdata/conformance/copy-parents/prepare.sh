chmod 700 a/b
chmod 750 a/b/c
