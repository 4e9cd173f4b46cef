# Guest side of crash.py: write through the journal, then lose power with the devices open.
i=0
while read dev name opts; do
  i=$((i+1))
  integritysetup open $opts $dev c$i || { echo "OPEN FAIL $name"; continue; }
  n=$(blockdev --getsz /dev/mapper/c$i)
  bs=$(blockdev --getss /dev/mapper/c$i)
  dd if=/in/pat.bin of=/dev/mapper/c$i bs=4096 count=$((n / 8)) oflag=direct conv=notrunc,fsync 2>/dev/null
  dd if=/in/pat.bin of=/dev/mapper/c$i bs=4096 skip=$((n / 8 - 16)) seek=$((n / 8 - 16)) count=16 oflag=direct conv=notrunc,fsync 2>/dev/null
  echo "$name written: $n sectors"
done < /in/cases.txt
echo "powering off with the devices open"
poweroff -n -f
