# Guest side of reference.py: format every disk with integritysetup, dump it.
mkdir -p /out
{ uname -r; integritysetup --version; } > /out/versions.txt 2>&1
while read dev name opts; do
  if ! integritysetup format --batch-mode $opts $dev > /out/$name.format.log 2>&1; then
    echo "FORMAT FAIL $name"; cat /out/$name.format.log; : > /out/$name.failed; continue
  fi
  integritysetup dump $dev > /out/$name.dump.txt 2>&1
done < /in/cases.txt
sync
