# Guest side of target_images.py: load each dmkit-written image with dmkit's own table line,
# read the whole mapped device, record status and table, remove the mapping.
# /in/target_cases.in lines: NAME <start> <length> integrity <args...>
mkdir -p /out
{ uname -r; dmsetup --version; } > /out/versions.txt 2>&1
while read name table; do
  dmesg -c > /dev/null 2>&1
  if ! dmsetup create "$name" --table "$table" > /out/$name.create.log 2>&1; then
    echo "CREATE FAIL $name"; cat /out/$name.create.log
    dmesg > /out/$name.dmesg 2>&1
    continue
  fi
  sha256sum /dev/mapper/$name > /out/$name.sha256 2>&1
  dmsetup status "$name" > /out/$name.status 2>&1
  dmsetup table --showkeys "$name" > /out/$name.table 2>&1
  dmsetup remove "$name" >> /out/$name.create.log 2>&1
  dmesg | grep -iE 'integrity|device-mapper' > /out/$name.dmesg 2>&1
  echo "$name $(cut -d' ' -f1 /out/$name.sha256) $(cat /out/$name.status)"
done < /in/target_cases.in
sync
