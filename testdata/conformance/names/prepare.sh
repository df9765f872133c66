# git keeps neither empty directories, nor modes beyond +x, nor owners
mkdir -p empty/inner
chmod 000 zero
chmod 700 private
chown 1234:5678 owned
