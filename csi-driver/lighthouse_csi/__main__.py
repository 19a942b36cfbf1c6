from lighthouse_csi.server import main

main()
