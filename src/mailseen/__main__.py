from mailseen.cli import main

main()
