# Guest side of import.py: open what dmkit formatted and imported, read it.
mkdir -p /out
{ uname -r; integritysetup --version; } > /out/versions.txt 2>&1
while read dev name opts; do
  if ! integritysetup open $opts $dev x > /out/$name.open.log 2>&1; then
    echo "OPEN FAIL $name"; cat /out/$name.open.log; continue
  fi
  dmsetup table x > /out/$name.table
  blockdev --getsz /dev/mapper/x > /out/$name.size
  sha256sum /dev/mapper/x > /out/$name.sha256 2> /out/$name.err
  dmsetup status x > /out/$name.status
  integritysetup close x
done < /in/cases.txt
dmesg > /out/dmesg.txt
sync
